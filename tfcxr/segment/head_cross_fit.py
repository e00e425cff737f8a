"""Cross-fitting a definition head (step 4 of :mod:`tfcxr.segment.fit_head`): test pairs that also train the head.

With few pairs of a mask definition, a preset's test pairs of that definition can join the head's fit and still be
scored held out: they are split into folds, and each fold is scored by a head trained on everything else. The
``HeadConfig`` (``folds``, ``seed``, ``dtype``, ``name``, ``mask_definition``) and the chosen setting come from
``fit_head``; nothing is chosen on the cross-fitted pairs.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def check_pooled(pairs, pooled: dict, config, settings) -> None:
    """The checks of :func:`tfcxr.segment.fit_head.fit_head` on the cross-fitted sets (see its Raises)."""
    if pooled and settings is None:
        raise ValueError(f"head {config.name!r}: cross-fitting {sorted(pooled)} needs scoring `settings`")
    seen = {pair.name: "the training pairs" for pair in pairs}
    for name, part in pooled.items():
        if len(part) < config.folds:
            raise ValueError(f"head {config.name!r}: cross-fit set {name!r} has {len(part)} pairs, fewer than "
                             f"`folds`={config.folds}")
        for pair in part:
            if pair.name in seen:
                raise ValueError(f"head {config.name!r}: pair {pair.name!r} of cross-fit set {name!r} is also in "
                                 f"{seen[pair.name]}; a cross-fitted pair must be held out from every other fit")
            seen[pair.name] = f"cross-fit set {name!r}"


def cross_fit(trainer, n_train: int, pooled: dict, best: dict, settings, cache) -> dict:
    """Out-of-fold scores of test pairs that also train the head.

    The pooled pairs (the trainer's examples ``n_train`` on, in the order of `pooled`) are split into
    ``config.folds`` seeded folds per test set (the trainer's `HeadConfig`); for each fold a head with the `best`
    setting (learning rate and epochs) trains on the training pairs and every other
    pooled pair, is stored in ``config.dtype`` and decodes the fold's pairs through the model's full inference
    (every prompt, QC flags), as the shipped variant's test scoring does.

    Returns:
        ``{"folds": k, "sets": {test set: {prompt: summary}}}`` (summaries of
        :func:`tfcxr.segment.preset_evaluation.summarise` over the out-of-fold rows, in each set's pair order).
    """
    from .fit_head import stored_head
    from .heads import read_head
    from .preset_evaluation import score_pairs, summarise

    model, config = trainer.model, trainer.config
    offsets, start = {}, n_train
    for name, part in pooled.items():
        offsets[name], start = np.arange(start, start + len(part)), start + len(part)
    everything = np.arange(start)
    definition, inference, attached = config.name, model.inference, model.heads.get(config.name)
    sets = {}
    try:
        model.inference = inference.replace(definition=definition)
        for name, part in pooled.items():
            folds = np.array_split(np.random.default_rng(config.seed).permutation(len(part)), config.folds)
            rows = {}
            for k, fold in enumerate(folds):
                held_out = set(offsets[name][fold].tolist())
                train_index = np.array([i for i in everything if i not in held_out])
                decoder, _ = trainer.fit(train_index, best["learning_rate"], epochs=[best["epochs"]])
                model.add_head(stored_head(read_head(decoder, config.name, config.mask_definition), config.dtype))
                scores = score_pairs(model, [part[i] for i in fold], settings, cache, with_flags=True)
                for prompt, entry in scores.items():
                    rows.setdefault(prompt, {}).update(zip(fold.tolist(), entry["per_image"]))
                logger.info("head %s cross-fit %s fold %d/%d: refine mean Dice %s", config.name, name, k + 1,
                            config.folds, scores.get("refine", {}).get("dice", {}).get("mean"))
            sets[name] = {prompt: summarise([by_index[i] for i in range(len(part))], settings, prompt != "gt")
                          for prompt, by_index in rows.items()}
    finally:  # the caller's model as it came: its settings and the head it carried (or none)
        model.inference = inference
        model.remove_head(config.name)
        if attached is not None:
            model.add_head(attached)
    return {"folds": config.folds, "sets": sets}
