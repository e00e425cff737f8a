"""Tests for tfcxr.segment.heads and tfcxr.segment.fit_head: definition heads on a tiny segmenter."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import yaml

from segment_fakes import write_pairs
from test_lung_split import fake_data_root
from tfcxr.segment import build_preset, fit_head, heads, load_segmenter, preset_evaluation, presets
from tfcxr.segment.eager_masks import segment_lungs
from tfcxr.segment.segmenter_format import save_segmenter
from tfcxr.segment.weights import WeightsError


@pytest.fixture(scope="module")
def tiny():
    return load_segmenter("tiny")


def _inputs(model, n=2, seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, model.mask_decoder.hidden_size, model.embedding_size,
                                  model.embedding_size)).astype(np.float32)
    boxes = np.tile(np.array([[[4.0, 4.0, 30.0, 60.0], [34.0, 4.0, 60.0, 60.0]]], np.float32), (n, 1, 1))
    return embeddings, boxes


def _shifted_head(model, scale=0.5):
    head = heads.read_head(model.mask_decoder, "classic", {"name": "classic", "description": "test"})
    rng = np.random.default_rng(1)
    head.arrays = {k: v + scale * rng.normal(size=v.shape).astype(np.float32) for k, v in head.arrays.items()}
    return head


def test_an_exact_copy_decodes_like_the_model_and_a_head_only_changes_its_own_variables(tiny):
    embeddings, boxes = _inputs(tiny)
    own = np.asarray(tiny.decode(embeddings, boxes))
    np.testing.assert_allclose(np.asarray(tiny.decode_with(heads.copy_decoder(tiny), embeddings, boxes)), own,
                               atol=1e-5)
    head = _shifted_head(tiny)
    decoder = heads.copy_decoder(tiny, head)
    changed = {k for k, v in heads.decoder_entries(decoder)
               if not np.array_equal(v.numpy(), dict(heads.decoder_entries(tiny.mask_decoder))[k].numpy())}
    assert changed == set(head.arrays) and all(k.startswith(heads.HEAD_PREFIXES) for k in changed)
    assert np.abs(np.asarray(tiny.decode_with(decoder, embeddings, boxes)) - own).max() > 1e-3


def test_a_head_is_chosen_by_settings_and_leaves_the_models_own_masks_alone(tiny, tmp_path):
    model = load_segmenter("tiny")
    embeddings, boxes = _inputs(model)
    own = np.asarray(model.decode(embeddings, boxes))
    model.add_head(_shifted_head(model))
    np.testing.assert_array_equal(np.asarray(model.decode(embeddings, boxes)), own)
    through_head = np.asarray(model.decode(embeddings, boxes, "classic"))
    assert np.abs(through_head - own).max() > 1e-3
    images = [np.random.default_rng(3).random((64, 56, 1)).astype(np.float32)]
    settings = model.inference.replace(threshold=float(np.median(through_head)), clean=False)
    default = segment_lungs(model, images, settings=settings)
    classic = segment_lungs(model, images, settings=settings.replace(definition="classic"))
    assert not np.array_equal(default[0], classic[0])
    with pytest.raises(ValueError, match="no mask head 'other'.*classic"):
        model.decode(embeddings, boxes, "other")
    with pytest.raises(ValueError, match="head name"):
        model.inference.replace(definition="Not A Name")


def test_heads_are_saved_with_the_segmenter_checked_and_declared_variants_load(tiny, tmp_path, monkeypatch):
    model = load_segmenter("tiny")
    model.add_head(_shifted_head(model))
    compact = save_segmenter(model, tmp_path / "compact", weights_dtype="float16")
    assert json.loads((compact / "segmenter.json").read_text())["heads"]["classic"]["dtype"] == "float16"
    directory = save_segmenter(model, tmp_path / "pkg" / "tiny-lungs")
    meta = json.loads((directory / "segmenter.json").read_text())
    assert meta["heads"]["classic"]["file"] == "head_classic.npz" and meta["heads"]["classic"]["dtype"] == "float32"
    loaded = load_segmenter(str(directory))
    embeddings, boxes = _inputs(model)
    np.testing.assert_allclose(np.asarray(loaded.decode(embeddings, boxes, "classic")),
                               np.asarray(model.decode(embeddings, boxes, "classic")), atol=1e-4)
    meta["variants"] = {"tiny-lungs-classic": {"inference": {"definition": "classic"}}}
    (directory / "segmenter.json").write_text(json.dumps(meta))
    monkeypatch.setattr(presets, "PACKAGED_DIR", tmp_path / "pkg")
    assert "tiny-lungs-classic" in presets.available_presets()
    variant = load_segmenter("tiny-lungs-classic")
    assert variant.inference.definition == "classic" and variant.name == "tiny-lungs-classic"
    assert load_segmenter("tiny-lungs").inference.definition == ""
    meta["variants"]["tiny-lungs-other"] = {"inference": {"definition": "other"}}
    (directory / "segmenter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="segmenter.json: variant 'tiny-lungs-other'.*'other' names no stored head"):
        load_segmenter("tiny-lungs-other")
    head_file = directory / "head_classic.npz"
    head_file.write_bytes(head_file.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="head_classic.npz.*sha256"):
        load_segmenter(str(directory))
    meta["heads"]["classic"]["file"] = "../weights.npz"
    (directory / "segmenter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="segmenter.json.*must name the file 'head_classic.npz'"):
        load_segmenter(str(directory))


def test_a_head_whose_variables_do_not_match_the_decoder_is_refused(tiny):
    head = _shifted_head(tiny)
    key = next(iter(head.arrays))
    wrong_shape = heads.MaskHead("classic", {}, {**head.arrays, key: head.arrays[key][..., :1]})
    with pytest.raises(WeightsError, match="shape"):
        heads.copy_decoder(tiny, wrong_shape)
    missing = heads.MaskHead("classic", {}, {k: v for k, v in head.arrays.items() if k != key})
    with pytest.raises(WeightsError, match="do not match"):
        heads.copy_decoder(tiny, missing)


def test_training_a_head_lowers_its_loss_and_changes_only_head_variables(tiny, tmp_path):
    import tensorflow as tf

    from tfcxr.data.pairs import load_pairs
    from tfcxr.segment.losses import segmentation_loss

    pairs = load_pairs(str(write_pairs(tmp_path / "pairs", count=6, size=(64, 64))))
    examples = fit_head.head_examples(tiny, pairs)
    config = fit_head.HeadConfig(epochs=[3, 20], folds=2, batch_size=3, jitter=2.0, own_jitter=1.0)
    everything = np.arange(len(pairs))

    def loss(decoder):
        logits = tiny.decode_with(decoder, tf.constant(examples["embeddings"]), examples["boxes"])
        return float(segmentation_loss(logits, examples["labels"]))

    trainer = fit_head.HeadTrainer(tiny, examples, config)
    decoder, scores = trainer.fit(everything, 3e-3, evaluate_index=everything[:2])
    assert set(scores) == {3, 20} and all(d.shape == (2,) and ((d >= 0) & (d <= 1)).all() for d in scores.values())
    assert loss(decoder) < loss(tiny.mask_decoder) - 0.01
    original = dict(heads.decoder_entries(tiny.mask_decoder))
    changed = {k for k, v in heads.decoder_entries(decoder) if not np.array_equal(v.numpy(), original[k].numpy())}
    assert changed and all(k.startswith(heads.HEAD_PREFIXES) for k in changed)


def test_each_fit_of_a_trainer_starts_afresh(tiny, tmp_path):
    from tfcxr.data.pairs import load_pairs

    pairs = load_pairs(str(write_pairs(tmp_path / "pairs", count=5, size=(64, 64))))
    examples = fit_head.head_examples(tiny, pairs)
    config = fit_head.HeadConfig(epochs=[2], folds=2, batch_size=2)

    def head_after(trainer, index, learning_rate):
        decoder, _ = trainer.fit(index, learning_rate)
        return {k: v.numpy().copy() for k, v in heads.head_entries(decoder)}

    trainer = fit_head.HeadTrainer(tiny, examples, config)
    first = head_after(trainer, [0, 1, 2], 1e-3)
    other = head_after(trainer, [2, 3, 4], 3e-3)  # other pairs, another learning rate, in between
    again = head_after(trainer, [0, 1, 2], 1e-3)
    fresh = head_after(fit_head.HeadTrainer(tiny, examples, config), [0, 1, 2], 1e-3)
    assert not all(np.array_equal(first[k], other[k]) for k in first)
    for key in first:  # the same fit: the head and the optimizer state of the fit before are gone
        np.testing.assert_allclose(again[key], first[key], rtol=0, atol=1e-6)
        np.testing.assert_allclose(fresh[key], first[key], rtol=0, atol=1e-6)


def test_build_preset_with_a_head_chooses_it_by_cross_validation_and_scores_the_variant(tmp_path, monkeypatch):
    from test_segment_build_preset import tiny_config

    head = {"name": "classic", "mask_definition": {"name": "classic", "description": "tiny classic"},
            "learning_rates": [1e-3, 3e-3], "epochs": [2, 4], "folds": 3, "dtype_tolerance": 0.05}
    config = tiny_config(fake_data_root(tmp_path / "data"), heads=[head], stages=[
        {"name": "decoder", "model": "tiny", "epochs": 1, "batch_size": 4}],
        settings_grid={"prompt": ["refine"], "refine_rounds": [1], "threshold": [0.0]})
    preset_dir = build_preset.build_preset(config, tmp_path / "out")
    report = json.loads((preset_dir / "evaluation_classic.json").read_text())
    assert report["n"] == 3 and all(p.startswith(("CHNCXR", "MCUCXR")) for p in report["pairs"])
    table = report["cross_validation"]
    assert len(table) == 4 and report["chosen"] == max(table.values(), key=lambda row: row["mean_dice"])
    assert set(report["tests"]) == {"classic", "v7"} and report["tests"]["classic"]["refine"]["dice"]["n"] == 4
    meta = json.loads((preset_dir / "segmenter.json").read_text())
    assert meta["variants"]["tiny-lungs-classic"]["inference"] == {"definition": "classic"}
    assert meta["provenance"]["heads"]["classic"]["chosen"] == report["chosen"]
    card = (preset_dir / "MODEL_CARD.md").read_text()
    assert "## Head `classic`: variant `tiny-lungs-classic`" in card
    assert "| tiny-lungs-classic | classic | refine |" in card
    monkeypatch.setattr(presets, "PACKAGED_DIR", tmp_path / "package")
    build_preset.install_preset(preset_dir, "tiny-lungs")
    assert load_segmenter("tiny-lungs-classic").inference.definition == "classic"

    # The CLI fits the same head, from the config's `heads` entry, on the installed preset.
    yaml_path = tmp_path / "preset.yaml"
    yaml_path.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    assert fit_head.main(["--config", str(yaml_path), "--head", "classic", "--out", str(tmp_path / "refit")]) == 0
    refit = json.loads((tmp_path / "refit" / "tiny-lungs" / "evaluation_classic.json").read_text())
    assert refit["chosen"]["epochs"] == report["chosen"]["epochs"] and refit["pairs"] == report["pairs"]
    assert fit_head.main(["--config", str(yaml_path), "--head", "other", "--out", str(tmp_path / "x")]) != 0

    # Cross-fitting a test set: its pairs are scored out of fold, then train the shipped head too.
    trained, scored = [], []  # (train index, the fit's head rounded as stored); (pair names, definition, head)
    fit, score_pairs = fit_head.HeadTrainer.fit, preset_evaluation.score_pairs

    def recording_fit(trainer, index, *args, **kwargs):
        decoder, scores = fit(trainer, index, *args, **kwargs)
        head = fit_head.stored_head(heads.read_head(decoder, "classic", {}), "float16")
        trained.append((np.asarray(index), head.arrays))
        return decoder, scores

    def recording_score_pairs(m, pairs, *args, **kwargs):
        head = m.heads.get("classic")
        scored.append(([p.name for p in pairs], m.inference.definition, head and dict(head.arrays)))
        return score_pairs(m, pairs, *args, **kwargs)

    monkeypatch.setattr(fit_head.HeadTrainer, "fit", recording_fit)
    monkeypatch.setattr(preset_evaluation, "score_pairs", recording_score_pairs)
    crossed = dataclasses.replace(config, heads=[{**head, "cross_fit": ["classic"]}])
    yaml_path.write_text(yaml.safe_dump(dataclasses.asdict(crossed)))
    assert fit_head.main(["--config", str(yaml_path), "--head", "classic", "--out", str(tmp_path / "cross")]) == 0
    cross = json.loads((tmp_path / "cross" / "tiny-lungs" / "evaluation_classic.json").read_text())
    names = cross["pairs"]
    assert cross["n_training_pairs"] == 3 and cross["n"] == 7 and names[:3] == report["pairs"]
    out_of_fold = cross["cross_fit"]["sets"]["classic"]
    assert [r["name"] for r in out_of_fold["refine"]["per_image"]] == [
        r["name"] for r in report["tests"]["classic"]["refine"]["per_image"]] and set(cross["tests"]) == {"v7"}
    folds = [row for row in scored if set(row[0]) <= set(names[3:])]
    assert len(folds) == 3 and sorted(n for f, _, _ in folds for n in f) == sorted(names[3:])
    fold_fits = trained[-4:-1]  # after the CV choice's fits, one per fold, then the shipped head's
    for (pair_names, definition, head), (index, fitted) in zip(folds, fold_fits):
        assert definition == "classic" and set(head) == set(fitted)
        assert all(np.array_equal(head[key], fitted[key]) for key in fitted)  # scored by that fold's own head
        assert not set(pair_names) & {names[i] for i in index}  # ... which never trained on its pairs
        assert set(names[:3]) <= {names[i] for i in index}
    assert not all(np.array_equal(folds[0][2][k], folds[1][2][k]) for k in folds[0][2])
    assert len(trained[-1][0]) == 7  # the shipped head: every pair
    assert "(out of fold)" in (tmp_path / "cross" / "tiny-lungs" / "MODEL_CARD.md").read_text()


def test_head_config_and_missing_pairs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="head name"):
        fit_head.HeadConfig(name="../x")
    with pytest.raises(ValueError, match="folds"):
        fit_head.HeadConfig(folds=1)
    manifest = tmp_path / "train.csv"
    manifest.write_text("image_path,mask_path,dataset\na.png,b.png,lungs_v7_covid\n")
    with pytest.raises(ValueError, match="train.csv: no training pairs from datasets"):
        fit_head.training_pairs(str(manifest), ["shenzhen_lungs"], tmp_path)
    shutil.rmtree(tmp_path)


def test_cross_fit_sets_must_be_held_out_and_large_enough():
    from types import SimpleNamespace as Pair

    from tfcxr.segment.head_cross_fit import check_pooled

    config = fit_head.HeadConfig(folds=2, cross_fit="classic")
    assert config.cross_fit == ["classic"]  # a YAML string names one set
    train, settings = [Pair(name="a"), Pair(name="b")], object()
    check_pooled(train, {"classic": [Pair(name="c"), Pair(name="d")]}, config, settings)
    with pytest.raises(ValueError, match="'classic' has 1 pairs, fewer than `folds`=2"):
        check_pooled(train, {"classic": [Pair(name="c")]}, config, settings)
    with pytest.raises(ValueError, match="pair 'a' of cross-fit set 'classic' is also in the training pairs"):
        check_pooled(train, {"classic": [Pair(name="a"), Pair(name="d")]}, config, settings)
    with pytest.raises(ValueError, match="pair 'c' of cross-fit set 'v7' is also in cross-fit set 'classic'"):
        check_pooled(train, {"classic": [Pair(name="c"), Pair(name="d")], "v7": [Pair(name="c"), Pair(name="e")]},
                     config, settings)
    with pytest.raises(ValueError, match="needs scoring `settings`"):
        check_pooled(train, {"classic": [Pair(name="c"), Pair(name="d")]}, config, None)


def test_a_removed_head_is_gone_and_the_model_still_saves(tmp_path):
    import tensorflow as tf

    model = load_segmenter("tiny")
    embeddings, boxes = _inputs(model)
    model.add_head(_shifted_head(model))
    model.decode(embeddings, boxes, head="classic")
    model.remove_head("classic")
    model.remove_head("classic")  # removing an absent head is a no-op
    with pytest.raises(ValueError, match="no mask head 'classic'"):
        model.decode(embeddings, boxes, head="classic")
    model.add_head(_shifted_head(model))
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))  # its tracked state is still consistent


def test_cross_fitting_hands_back_the_callers_model_as_it_came(tmp_path):
    from types import SimpleNamespace

    from tfcxr.data.pairs import load_pairs
    from tfcxr.segment.head_cross_fit import cross_fit

    pairs = load_pairs(str(write_pairs(tmp_path / "pairs", count=5, size=(64, 64))))
    settings = SimpleNamespace(batch_size=4, bootstrap_resamples=20, seed=0, flag_dice=0.85)
    config = fit_head.HeadConfig(epochs=[1], folds=2, batch_size=3)
    for attached in (_shifted_head(load_segmenter("tiny")), None):
        model = load_segmenter("tiny")
        if attached is not None:
            model.add_head(attached)
        inference = model.inference
        trainer = fit_head.HeadTrainer(model, fit_head.head_examples(model, pairs), config)
        report = cross_fit(trainer, 3, {"held": pairs[3:]}, {"learning_rate": 1e-3, "epochs": 1}, settings, None)
        assert [r["name"] for r in report["sets"]["held"]["refine"]["per_image"]] == [p.name for p in pairs[3:]]
        assert model.inference == inference and model.heads.get("classic") is attached


def test_a_head_runs_in_the_traced_serving_graph_and_its_variables_are_exported(tmp_path):
    import tensorflow as tf

    from tfcxr.export.segmenter import _serving_segmenter_class
    from tfcxr.segment.tf_masks import lung_masks_tf

    model = load_segmenter("tiny")
    model.add_head(_shifted_head(model))
    model.inference = model.inference.replace(definition="classic")
    segmenter = _serving_segmenter_class()(model)
    x = np.random.default_rng(2).random((2, 40, 48, 1)).astype(np.float32)
    traced = tf.function(segmenter.serving_fn, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    masks = traced(tf.constant(x))
    np.testing.assert_array_equal(masks, lung_masks_tf(model, x))
    own = lung_masks_tf(model, x, settings=model.inference.replace(definition=""))
    assert not np.array_equal(masks, own)
    exported = {id(v) for v in segmenter.variables}
    assert all(id(v) in exported for v in model._head_decoders["classic"].variables)
