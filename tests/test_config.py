"""``AmpOffsetConfig``: LSST defaults, LSST names, validation, round trips."""

from __future__ import annotations

import json

import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError
from ampoffset_dask.config import BackgroundConfig, DetectionConfig

IGNORED = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT",
           "NO_DATA"]


def test_defaults_of_section_1_1():
    c = AmpOffsetConfig()
    assert c.amp_edge_inset == 5 and type(c.amp_edge_inset) is int
    assert c.amp_edge_width == 64 and type(c.amp_edge_width) is int
    assert c.amp_edge_min_frac == 0.5
    assert c.amp_edge_max_offset == 5.0
    assert c.do_window_smoothing is True
    assert c.amp_edge_window_frac == 512 / 4176 == 0.12260536398467432
    assert c.do_background is True
    assert c.background_fraction_sample == 1.0
    assert c.do_detection is True
    assert c.apply_weights is True
    assert c.do_apply_amp_offset is False
    assert c.background.algorithm == "AKIMA_SPLINE"
    assert c.background.use_approx is False
    assert c.background.undersample_style == "REDUCE_INTERP_ORDER"
    assert c.background.statistic == "MEANCLIP"
    assert list(c.background.ignored_pixel_mask) == IGNORED
    assert list(c.bad_mask_planes) == IGNORED
    c.validate()


def test_detection_defaults_of_section_4():
    d = AmpOffsetConfig().detection
    assert d.threshold_value == 5.0
    assert d.threshold_type == "stdev"
    assert d.threshold_polarity == "positive"
    assert d.include_threshold_multiplier == 1.0
    assert d.n_sigma_to_grow == 2.4
    assert d.isotropic_grow is True
    assert d.n_sigma_for_kernel == 7.0
    assert list(d.stats_mask) == ["BAD", "SAT", "EDGE", "NO_DATA"]
    assert d.sigma == 2.0


def test_defaults_are_independent_instances():
    a, b = AmpOffsetConfig(), AmpOffsetConfig()
    a.detection.isotropic_grow = False
    assert b.detection.isotropic_grow is True


def test_camel_case_attribute_get_and_set():
    c = AmpOffsetConfig()
    assert c.ampEdgeWindowFrac == c.amp_edge_window_frac
    assert c.doApplyAmpOffset is False
    c.ampEdgeWidth = 12
    assert c.amp_edge_width == 12
    c.ampEdgeMaxOffset = 10.0
    assert c.amp_edge_max_offset == 10.0
    c.detection.isotropicGrow = False
    assert c.detection.isotropic_grow is False
    c.detection.nSigmaToGrow = 3.0
    assert c.detection.n_sigma_to_grow == 3.0
    c.background.undersampleStyle = "THROW_EXCEPTION"
    assert c.background.undersample_style == "THROW_EXCEPTION"
    c.background.statisticsProperty = "MEANCLIP"
    assert c.background.statistic == "MEANCLIP"
    assert "ampEdgeWidth" not in vars(c)  # no stray attribute created


def test_unknown_attribute():
    c = AmpOffsetConfig()
    with pytest.raises(AttributeError, match="ampEdgeFoo"):
        _ = c.ampEdgeFoo
    with pytest.raises(ConfigError, match="ampEdgeFoo"):
        c.ampEdgeFoo = 3
    with pytest.raises(ConfigError, match="isotropicGrowth"):
        c.detection.isotropicGrowth = True


def test_from_lsst_camel_and_dotted():
    c = AmpOffsetConfig.from_lsst({
        "ampEdgeMaxOffset": 10.0,
        "doApplyAmpOffset": True,
        "ampEdgeWidth": 12,
        "detection.isotropicGrow": False,
        "detection.thresholdValue": 4.5,
        "background.ignoredPixelMask": ["BAD", "SAT"],
        "amp_edge_min_frac": 0.1,
    })
    assert c.amp_edge_max_offset == 10.0
    assert c.do_apply_amp_offset is True
    assert c.amp_edge_width == 12
    assert c.detection.isotropic_grow is False
    assert c.detection.threshold_value == 4.5
    assert c.background.ignored_pixel_mask == ("BAD", "SAT")
    assert c.bad_mask_planes == ("BAD", "SAT")
    assert c.amp_edge_min_frac == 0.1
    # untouched fields keep LSST's defaults
    assert c.amp_edge_inset == 5
    assert c.detection.n_sigma_to_grow == 2.4


def test_from_lsst_kwargs_and_nested_mapping():
    c = AmpOffsetConfig.from_lsst(ampEdgeInset=2, detection={"isotropicGrow": False,
                                                             "nSigmaToGrow": 1.0})
    assert c.amp_edge_inset == 2
    assert c.detection.isotropic_grow is False
    assert c.detection.n_sigma_to_grow == 1.0
    d = AmpOffsetConfig.from_lsst({"ampEdgeInset": 3}, ampEdgeInset=4)
    assert d.amp_edge_inset == 4  # keyword wins


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"ampEdgeWindowFrac": 1.5}, "ampEdgeWindowFrac"),
        ({"ampEdgeWindowFrac": 0.0}, "ampEdgeWindowFrac"),
        ({"ampEdgeWidth": -1}, "ampEdgeWidth"),
        ({"ampEdgeWidth": 0}, "ampEdgeWidth"),
        ({"ampEdgeInset": -1}, "ampEdgeInset"),
        ({"ampEdgeMinFrac": 1.5}, "ampEdgeMinFrac"),
        ({"ampEdgeMinFrac": -0.1}, "ampEdgeMinFrac"),
        ({"ampEdgeMaxOffset": -1.0}, "ampEdgeMaxOffset"),
        ({"ampEdgeMaxOffset": float("nan")}, "ampEdgeMaxOffset"),
        ({"backgroundFractionSample": 0.0}, "backgroundFractionSample"),
        ({"ampEdgeWidth": 12.0}, "ampEdgeWidth"),
        ({"ampEdgeWidth": "12"}, "ampEdgeWidth"),
        ({"ampEdgeInset": True}, "ampEdgeInset"),
        ({"doBackground": 1}, "doBackground"),
        ({"applyWeights": "False"}, "applyWeights"),
        ({"doWindowSmoothing": None}, "doWindowSmoothing"),
        ({"background.algorithm": "SPLINE"}, "background.algorithm"),
        ({"background.useApprox": True}, "background.useApprox"),
        ({"background.statisticsProperty": "MEDIAN"}, "background.statisticsProperty"),
        ({"background.undersampleStyle": "NOPE"}, "background.undersampleStyle"),
        ({"background.ignoredPixelMask": "BAD"}, "background.ignoredPixelMask"),
        ({"detection.thresholdType": "sigma"}, "detection.thresholdType"),
        ({"detection.thresholdPolarity": "up"}, "detection.thresholdPolarity"),
        ({"detection.statsMask": [1, 2]}, "detection.statsMask"),
        ({"detection.sigma": 0}, "detection.sigma"),
        ({"detection.nSigmaToGrow": -1.0}, "detection.nSigmaToGrow"),
        # infinite: accepted before, then an OverflowError naming no field (or, for the
        # threshold, a detection "skipped: no usable pixel")
        ({"detection.nSigmaToGrow": float("inf")}, "detection.nSigmaToGrow"),
        ({"detection.nSigmaForKernel": float("inf")}, "detection.nSigmaForKernel"),
        ({"detection.sigma": float("inf")}, "detection.sigma"),
        ({"detection.thresholdValue": float("inf")}, "detection.thresholdValue"),
        ({"detection.includeThresholdMultiplier": float("inf")},
         "detection.includeThresholdMultiplier"),
        ({"ampEdgeFoo": 1}, "ampEdgeFoo"),
        ({"detection.foo": 1}, "foo"),
        ({"background": 5}, "background"),
        ({"ampEdgeWidth.x": 1}, "ampEdgeWidth"),
    ],
)
def test_invalid_values_name_the_field(mapping, field):
    with pytest.raises(ConfigError) as info:
        AmpOffsetConfig.from_lsst(mapping)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"ampEdgeWindowFrac": "0.5"}, "ampEdgeWindowFrac"),
        ({"ampEdgeMaxOffset": "5"}, "ampEdgeMaxOffset"),
        ({"ampEdgeMinFrac": "abc"}, "ampEdgeMinFrac"),
        ({"ampEdgeMaxOffset": None}, "ampEdgeMaxOffset"),
        ({"backgroundFractionSample": [1]}, "backgroundFractionSample"),
        ({"detection.thresholdValue": "5"}, "thresholdValue"),
        ({"detection.nSigmaToGrow": "x"}, "nSigmaToGrow"),
        ({"detection.isotropicGrow": "yes"}, "isotropicGrow"),
    ],
)
def test_wrong_types_name_the_field(mapping, field):
    try:
        AmpOffsetConfig.from_lsst(mapping)
    except ConfigError as exc:
        assert field in str(exc)
    else:
        raise AssertionError(f"{mapping} was accepted")


def test_validate_on_mutated_config():
    c = AmpOffsetConfig()
    c.ampEdgeWindowFrac = 1.01
    with pytest.raises(ConfigError, match="ampEdgeWindowFrac"):
        c.validate()
    c.ampEdgeWindowFrac = 1.0  # allowed: the window equals the interface length
    c.validate()
    c.detection.thresholdType = "value"
    c.validate()
    assert issubclass(ConfigError, ValueError)


def test_to_dict_from_dict_round_trip():
    c = AmpOffsetConfig.from_lsst({
        "ampEdgeWidth": 12, "applyWeights": False, "detection.isotropicGrow": False,
        "background.ignoredPixelMask": ["BAD", "EDGE"], "detection.statsMask": ["BAD"],
    })
    d = c.to_dict()
    text = json.dumps(d)  # JSON-safe
    back = AmpOffsetConfig.from_dict(json.loads(text))
    assert back == c
    assert back.to_dict() == d
    assert d["amp_edge_width"] == 12
    assert d["detection"]["isotropic_grow"] is False
    assert d["background"]["ignored_pixel_mask"] == ["BAD", "EDGE"]
    assert isinstance(back.background.ignored_pixel_mask, tuple)
    assert AmpOffsetConfig.from_dict(AmpOffsetConfig().to_dict()) == AmpOffsetConfig()


def test_copy_is_deep():
    c = AmpOffsetConfig()
    d = c.copy()
    d.detection.sigma = 3.0
    assert c.detection.sigma == 2.0
    assert d != c


def test_sub_config_classes():
    assert BackgroundConfig().to_dict()["algorithm"] == "AKIMA_SPLINE"
    assert DetectionConfig().to_dict()["stats_mask"] == ["BAD", "SAT", "EDGE", "NO_DATA"]
    BackgroundConfig().validate()
    DetectionConfig().validate()
    with pytest.raises(ConfigError, match=r"bg\.algorithm"):
        BackgroundConfig(algorithm="X").validate(prefix="bg")


# -- production presets ------------------------------------------------------------------------
def test_presets_set_the_production_overrides_and_keep_lsst_defaults():
    from ampoffset_dask.config import PRESETS, list_presets, preset_for_camera

    assert [p.name for p in list_presets()] == ["lsstcam", "lsstcam-drp", "lsstcomcam", "hsc",
                                                 "decam", "cp-flat"]
    default = AmpOffsetConfig()
    lsstcam = AmpOffsetConfig.from_preset("LSSTCam")
    assert lsstcam.ampEdgeMaxOffset == 10.0 and lsstcam.doApplyAmpOffset is False
    drp = AmpOffsetConfig.from_preset("lsstcam-drp")
    assert drp.ampEdgeMaxOffset == 10.0 and drp.doApplyAmpOffset is True
    comcam = AmpOffsetConfig.from_preset("lsstcomcam")
    assert comcam.ampEdgeMaxOffset == 10.0 and comcam.doApplyAmpOffset is True
    hsc = AmpOffsetConfig.from_preset("hsc")
    assert hsc.doApplyAmpOffset and hsc.detection.threshold_type == "stdev"
    assert hsc.detection.isotropic_grow is False and hsc.ampEdgeMaxOffset == 5.0
    decam = AmpOffsetConfig.from_preset("decam")
    assert decam.doApplyAmpOffset and decam.ampEdgeMaxOffset == default.ampEdgeMaxOffset
    flat = AmpOffsetConfig.from_preset("cp_flat")
    assert (flat.ampEdgeMaxOffset, flat.ampEdgeInset, flat.doBackground, flat.doDetection,
            flat.doApplyAmpOffset) == (100000.0, 10, False, False, False)
    # everything a preset does not name keeps LSST's default
    for preset in PRESETS.values():
        cfg = AmpOffsetConfig.from_preset(preset.name).to_dict()
        touched = {k.split(".")[0] for k in preset.overrides}
        for key, value in default.to_dict().items():
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))
            if camel not in touched and key not in ("detection",):
                assert cfg[key] == value, (preset.name, key)
        assert preset.source
    # fields on top of a preset, in LSST names
    assert AmpOffsetConfig.from_preset("lsstcam", ampEdgeWidth=32).amp_edge_width == 32
    assert preset_for_camera("hsc").name == "hsc" and preset_for_camera("latiss") is None
    with pytest.raises(ConfigError, match=r"unknown preset 'subaru'.*lsstcam, lsstcam-drp"):
        AmpOffsetConfig.from_preset("subaru")


def test_lsst_names_as_constructor_keywords():
    """``AmpOffsetConfig(doApplyAmpOffset=True)`` as LSST's pex_config configs are built;
    snake_case keywords still work; unknown or doubled names are refused."""
    config = AmpOffsetConfig(doApplyAmpOffset=True, ampEdgeMaxOffset=10.0, amp_edge_width=32,
                             detection=DetectionConfig(thresholdValue=4.0))
    assert config.do_apply_amp_offset is True and config.amp_edge_max_offset == 10.0
    assert config.amp_edge_width == 32 and config.detection.threshold_value == 4.0
    assert config == AmpOffsetConfig.from_lsst({"doApplyAmpOffset": True,
                                                "ampEdgeMaxOffset": 10.0, "ampEdgeWidth": 32,
                                                "detection.thresholdValue": 4.0})
    with pytest.raises(ConfigError, match=r"unknown field 'ampEdgeFoo'"):
        AmpOffsetConfig(ampEdgeFoo=1)
    with pytest.raises(ConfigError, match=r"'amp_edge_width' given twice \('ampEdgeWidth' "
                                          r"and 'amp_edge_width'\)"):
        AmpOffsetConfig(ampEdgeWidth=1, amp_edge_width=2)


def test_an_int_in_a_float_field_is_that_float():
    """As pex_config's float fields: ``ampEdgeMaxOffset=10`` and ``10.0`` are one config, with
    one digest (a catalog of one resumes with the other)."""
    from ampoffset_dask.catalog import config_digest

    given = [AmpOffsetConfig.from_lsst(ampEdgeMaxOffset=10), AmpOffsetConfig(ampEdgeMaxOffset=10),
             AmpOffsetConfig.from_preset("lsstcam")]
    set_later = AmpOffsetConfig()
    set_later.ampEdgeMaxOffset = 10
    set_later.update({"detection.thresholdValue": 5, "backgroundFractionSample": 1})
    for config in [*given, set_later]:
        assert type(config.amp_edge_max_offset) is float
        assert config_digest(config) == config_digest(given[-1])
    assert type(set_later.detection.threshold_value) is float
    assert json.loads(json.dumps(set_later.to_dict()))["amp_edge_max_offset"] == 10.0
    # integers stay integers, and bools are not numbers
    assert type(AmpOffsetConfig(ampEdgeWidth=32).amp_edge_width) is int
    with pytest.raises(ConfigError, match="ampEdgeMaxOffset must be a number"):
        AmpOffsetConfig(ampEdgeMaxOffset=True).validate()


def test_a_sub_config_assigned_a_mapping_or_something_else():
    config = AmpOffsetConfig()
    config.background = {"algorithm": "LINEAR", "ignoredPixelMask": ["BAD"]}
    assert config.background == BackgroundConfig(algorithm="LINEAR", ignored_pixel_mask=("BAD",))
    config.detection = {"isotropicGrow": False}
    assert config.detection == DetectionConfig(isotropic_grow=False)
    config.validate()
    assert AmpOffsetConfig(background={"algorithm": "LINEAR"}).background.algorithm == "LINEAR"
    with pytest.raises(ConfigError, match=r"background is a sub-config: give a BackgroundConfig"):
        config.background = "AKIMA_SPLINE"
    with pytest.raises(ConfigError, match=r"unknown field 'binSize'"):
        config.background = {"binSize": 128}


def test_a_field_named_twice_in_one_mapping_is_refused():
    with pytest.raises(ConfigError, match=r"amp_edge_width given twice \('ampEdgeWidth' and "
                                          r"'amp_edge_width'\)"):
        AmpOffsetConfig.from_lsst({"ampEdgeWidth": 12, "amp_edge_width": 30})
    with pytest.raises(ConfigError, match=r"detection.isotropic_grow given twice"):
        AmpOffsetConfig.from_lsst({"detection.isotropicGrow": False,
                                   "detection.isotropic_grow": True})
    # the keywords are a second source: they override the mapping, in either spelling (the
    # same spelling always did, as a dict merge)
    assert AmpOffsetConfig.from_lsst({"detection.isotropicGrow": False},
                                     **{"detection.isotropic_grow": True}
                                     ).detection.isotropic_grow is True
    # a preset's field set again on top of it is an override, not a repeat
    assert AmpOffsetConfig.from_preset("lsstcam", ampEdgeMaxOffset=7).amp_edge_max_offset == 7.0


def test_the_digest_leaves_do_apply_amp_offset_out():
    from ampoffset_dask.catalog import config_digest

    assert config_digest(AmpOffsetConfig(doApplyAmpOffset=True)) == config_digest(
        AmpOffsetConfig())
    # the digest catalogs have recorded for the default config all along
    assert config_digest(AmpOffsetConfig()) == "d736307aec46c9c5"
    assert config_digest(AmpOffsetConfig(ampEdgeWidth=32)) != config_digest(AmpOffsetConfig())
