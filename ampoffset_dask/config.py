"""Configuration of the amp-offset measurement, mirroring LSST's ``AmpOffsetConfig``.

Attributes use snake_case; LSST's camelCase names are accepted everywhere a name is
given (``AmpOffsetConfig.from_lsst``, attribute access, ``update``), so that the
``AmpOffsetTask`` fields of an LSST configuration carry over with their names. Of the
background and detection sub-tasks only the settings that change AmpOffsetTask's result
exist (`BackgroundConfig`, `DetectionConfig`); any other sub-task field (``binSize``,
``reEstimateBackground``...) is refused as unknown rather than ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError

__all__ = ["ESTIMATORS", "PRESETS", "AmpOffsetConfig", "BackgroundConfig", "DetectionConfig",
           "Preset", "as_config", "list_presets", "preset_for_camera"]

DEFAULT_IGNORED_PIXEL_MASK = (
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "SUSPECT",
    "NO_DATA",
)

#: Pedestal estimators: LSST's (parity) and the opt-in robust one.
ESTIMATORS = ("lsst", "robust")
INTERP_STYLES = ("CONSTANT", "LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE")
UNDERSAMPLE_STYLES = ("THROW_EXCEPTION", "REDUCE_INTERP_ORDER", "INCREASE_NXNYSAMPLE")


def _snake(name: str) -> str:
    """``ampEdgeMaxOffset`` -> ``amp_edge_max_offset``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _LsstNames:
    """Mixin: read and write fields by their LSST camelCase names too."""

    _lsst_aliases: dict[str, str] = {}

    @classmethod
    def _field_for(cls, name: str) -> str:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if name in fields:
            return name
        alias = cls._lsst_aliases.get(name, _snake(name))
        if alias in fields:
            return alias
        raise ConfigError(f"{cls.__name__}: unknown field {name!r}")

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not real attributes (camelCase aliases).
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return object.__getattribute__(self, type(self)._field_for(name))
        except ConfigError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    @classmethod
    def _kinds(cls) -> dict[str, Any]:
        """``{field: "float", "tuple" or its sub-config class}`` for the fields assignments
        convert."""
        kinds = cls.__dict__.get("_kinds_cache")
        if kinds is None:
            kinds = {}
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                factory = f.default_factory
                if isinstance(factory, type) and issubclass(factory, _LsstNames):
                    kinds[f.name] = factory
                elif f.type in ("float", float):
                    kinds[f.name] = "float"
                elif str(f.type).startswith("tuple"):
                    kinds[f.name] = "tuple"
            type.__setattr__(cls, "_kinds_cache", kinds)
        return kinds

    def __setattr__(self, name: str, value: Any) -> None:
        field = type(self)._field_for(name)
        kind = type(self)._kinds().get(field)
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            # as pex_config's float fields: 10 and 10.0 are one config (and one digest)
            value = float(value)
        elif kind == "tuple" and isinstance(value, list):
            # a YAML/JSON list is the tuple (one config, one digest); anything else but a
            # tuple is left for validate() to refuse naming the field
            value = tuple(value)
        elif isinstance(kind, type) and not isinstance(value, kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{type(self).__name__}.{field} is a sub-config: give a "
                                  f"{kind.__name__} or a mapping of its fields, not {value!r}")
            value = kind().update(value)  # its defaults, then the fields given
        object.__setattr__(self, field, value)

    def update(self, mapping: Mapping[str, Any]) -> Any:
        """Set fields from a mapping of (possibly dotted, possibly camelCase) names.

        A sub-config's mapping sets only the fields it lists. Every name is resolved before
        any field is set, so a refused mapping changes nothing.

        Raises
        ------
        ConfigError
            For an unknown name, or a field named twice, in two spellings
            (``ampEdgeWidth`` and ``amp_edge_width``) or as a section's field and a dotted
            key (``background: {ignoredPixelMask: ...}`` and ``background.ignoredPixelMask``).
        """
        leaves: list[tuple[_LsstNames, str, Any]] = []
        given: dict[tuple[str, ...], str] = {}
        self._collect(mapping, (), "", leaves, given)
        for target, field, value in leaves:
            setattr(target, field, value)
        return self

    def _collect(self, mapping: Mapping[str, Any], path: tuple[str, ...], section: str,
                 leaves: list[tuple[_LsstNames, str, Any]],
                 given: dict[tuple[str, ...], str]) -> None:
        """Resolve ``mapping``'s names below this config (reached by the field ``path``,
        from the key described by ``section``) into ``leaves``; ``given`` maps each full
        field path to the key that named it, so that a field named twice is refused."""
        for key, value in mapping.items():
            target: _LsstNames = self
            *parents, leaf = str(key).split(".")
            where = list(path)
            for parent in parents:
                where.append(type(target)._field_for(parent))
                sub = getattr(target, where[-1])
                if not isinstance(sub, _LsstNames):
                    raise ConfigError(f"{key!r}: {parent!r} is not a sub-config")
                target = sub
            field = type(target)._field_for(leaf)
            where.append(field)
            named = f"{key!r} of section {section}" if section else repr(str(key))
            if isinstance(getattr(target, field), _LsstNames):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{key!r} is a sub-config; give a mapping")
                # its fields, keyed by their full path like dotted keys
                getattr(target, field)._collect(value, tuple(where), named, leaves, given)
                continue
            full = tuple(where)
            if full in given:
                raise ConfigError(f"{'.'.join(full)} given twice ({given[full]} and {named})")
            given[full] = named
            leaves.append((target, field, value))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe nested dictionary of the snake_case fields."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _LsstNames):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _lsst_keywords(cls: type) -> type:
    """Let the dataclass ``cls`` be built with LSST's camelCase field names as keywords
    too (``AmpOffsetConfig(doApplyAmpOffset=True)``, as pex_config configs are)."""
    init = cls.__init__

    def init_with_lsst_names(self: Any, *args: Any, **kwargs: Any) -> None:
        named: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, value in kwargs.items():
            field = cls._field_for(key)
            if field in named:
                raise ConfigError(f"{cls.__name__}: {field!r} given twice ({given[field]!r} "
                                  f"and {key!r})")
            named[field], given[field] = value, key
        init(self, *args, **named)

    init_with_lsst_names.__name__ = init_with_lsst_names.__qualname__ = "__init__"
    init_with_lsst_names.__doc__ = init.__doc__
    init_with_lsst_names.__signature__ = inspect.signature(init)  # type: ignore[attr-defined]
    cls.__init__ = init_with_lsst_names  # type: ignore[method-assign]
    return cls


@_lsst_keywords
@dataclasses.dataclass(eq=True)
class BackgroundConfig(_LsstNames):
    """The settings of LSST's ``SubtractBackgroundTask`` that AmpOffsetTask uses.

    Attributes
    ----------
    algorithm : str
        Interpolation style of the background model (``AKIMA_SPLINE`` in AmpOffsetTask).
    undersample_style : str
        What to do when there are too few bins for ``algorithm``.
    statistic : str
        Per-bin statistic; only ``MEANCLIP`` is supported.
    ignored_pixel_mask : tuple of str
        Mask planes ignored by the background and, in AmpOffsetTask, by everything else.
    use_approx : bool
        Chebyshev approximation instead of interpolation (not supported, must be False).
    """

    algorithm: str = "AKIMA_SPLINE"
    undersample_style: str = "REDUCE_INTERP_ORDER"
    statistic: str = "MEANCLIP"
    ignored_pixel_mask: tuple[str, ...] = DEFAULT_IGNORED_PIXEL_MASK
    use_approx: bool = False

    _lsst_aliases = {"statisticsProperty": "statistic", "undersampleStyle": "undersample_style"}

    def validate(self, prefix: str = "background") -> None:
        """Raise `ConfigError` naming the first invalid field."""
        if self.algorithm not in INTERP_STYLES:
            raise ConfigError(f"{prefix}.algorithm={self.algorithm!r} not in {INTERP_STYLES}")
        if self.undersample_style not in UNDERSAMPLE_STYLES:
            raise ConfigError(
                f"{prefix}.undersampleStyle={self.undersample_style!r} not in {UNDERSAMPLE_STYLES}"
            )
        if self.statistic != "MEANCLIP":
            raise ConfigError(f"{prefix}.statisticsProperty={self.statistic!r}: only MEANCLIP")
        _check_bool(self.use_approx, f"{prefix}.useApprox")
        if self.use_approx:
            raise ConfigError(
                f"{prefix}.useApprox=True is not supported (AmpOffsetTask sets it False)"
            )
        _check_planes(self.ignored_pixel_mask, f"{prefix}.ignoredPixelMask")


@_lsst_keywords
@dataclasses.dataclass(eq=True)
class DetectionConfig(_LsstNames):
    """The settings of LSST's ``SourceDetectionTask`` that change AmpOffsetTask's result.

    Attributes
    ----------
    threshold_value : float
        Detection threshold, in units of ``threshold_type``.
    threshold_type : str
        ``"stdev"`` (multiple of the clipped standard deviation of the smoothed image) or
        ``"value"`` (absolute, in image units).
    threshold_polarity : str
        ``"positive"``, ``"negative"`` or ``"both"``.
    include_threshold_multiplier : float
        A footprint is kept only if one of its pixels reaches this multiple of the
        threshold (afw's ``FootprintSet``); its pixels still extend down to the threshold.
        At most 1 keeps every footprint.
    n_sigma_to_grow : float
        Footprints are grown by ``int(n_sigma_to_grow * sigma + 0.5)`` pixels.
    isotropic_grow : bool
        Grow with a disk (True) or a Manhattan diamond (False, as HSC uses).
    n_sigma_for_kernel : float
        Smoothing kernel width in units of ``sigma``.
    stats_mask : tuple of str
        Planes ignored when computing the threshold's clipped standard deviation.
    sigma : float
        Smoothing Gaussian sigma in pixels (AmpOffsetTask passes 2).
    """

    threshold_value: float = 5.0
    threshold_type: str = "stdev"
    threshold_polarity: str = "positive"
    include_threshold_multiplier: float = 1.0
    n_sigma_to_grow: float = 2.4
    isotropic_grow: bool = True
    n_sigma_for_kernel: float = 7.0
    stats_mask: tuple[str, ...] = ("BAD", "SAT", "EDGE", "NO_DATA")
    sigma: float = 2.0

    _lsst_aliases = {"nSigmaToGrow": "n_sigma_to_grow", "nSigmaForKernel": "n_sigma_for_kernel"}

    def validate(self, prefix: str = "detection") -> None:
        """Raise `ConfigError` naming the first invalid field."""
        if self.threshold_type not in ("stdev", "value"):
            raise ConfigError(
                f"{prefix}.thresholdType={self.threshold_type!r}: use 'stdev' or 'value'"
            )
        if self.threshold_polarity not in ("positive", "negative", "both"):
            raise ConfigError(f"{prefix}.thresholdPolarity={self.threshold_polarity!r} is invalid")
        # finite: an infinite width or growth has no integer size, an infinite threshold
        # or multiplier detects nothing
        for name in ("threshold_value", "include_threshold_multiplier", "sigma"):
            field = f"{prefix}.{_camel(name)}"
            value = _check_number(getattr(self, name), field)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{field} must be finite and > 0, got {getattr(self, name)!r}")
        for name in ("n_sigma_to_grow", "n_sigma_for_kernel"):
            field = f"{prefix}.{_camel(name)}"
            value = _check_number(getattr(self, name), field)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{field} must be finite and >= 0, got "
                                  f"{getattr(self, name)!r}")
        _check_bool(self.isotropic_grow, f"{prefix}.isotropicGrow")
        _check_planes(self.stats_mask, f"{prefix}.statsMask")


def _check_number(value: Any, field: str) -> float:
    """``value`` as a float, or `ConfigError` naming ``field`` (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{field} must be a number, got {value!r}")
    return float(value)


def _check_bool(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be a bool, got {value!r}")


def _check_planes(planes: Iterable[str], field: str) -> None:
    """`ConfigError` naming ``field`` unless ``planes`` is a list (or tuple) of names."""
    if not isinstance(planes, (list, tuple)) or not all(isinstance(p, str) for p in planes):
        # None is what an empty YAML key gives
        hint = " (write [] for none)" if planes is None else ""
        raise ConfigError(f"{field} must be a list of mask-plane names, got {planes!r}{hint}")


@_lsst_keywords
@dataclasses.dataclass(eq=True)
class AmpOffsetConfig(_LsstNames):
    """Configuration of the amp-offset measurement (LSST ``AmpOffsetConfig``).

    Every field has LSST's default. LSST's camelCase names work as attribute names
    (``config.ampEdgeWidth = 12``) and in `from_lsst`.

    Attributes
    ----------
    amp_edge_inset : int
        Pixels between the amp boundary and the edge strip.
    amp_edge_width : int
        Thickness of the edge strip.
    amp_edge_min_frac : float
        Minimum fraction of valid positions along an interface.
    amp_edge_max_offset : float
        Interface offsets larger than this (absolute) are zeroed.
    do_window_smoothing : bool
        Smooth the edge difference with a NaN-aware moving average.
    amp_edge_window_frac : float
        Moving-average window as a fraction of the interface length.
    do_background : bool
        Fit and subtract a background first.
    background : BackgroundConfig
        Background settings.
    background_fraction_sample : float
        Background bin size as a fraction of the short amp side.
    do_detection : bool
        Detect and mask sources.
    detection : DetectionConfig
        Detection settings.
    apply_weights : bool
        Weight interfaces by their length.
    do_apply_amp_offset : bool
        Subtract the pedestals from the input exposure.
    estimator : str
        ``"lsst"`` (default): LSST's solve, bit-identical to ``AmpOffsetTask``.
        ``"robust"``: background re-fitted without the amp steps, inverse-variance
        interface weights and robust down-weighting of inconsistent interfaces
        (`ampoffset_dask.algorithm.estimators`). Not an LSST field.
    """

    amp_edge_inset: int = 5
    amp_edge_width: int = 64
    amp_edge_min_frac: float = 0.5
    amp_edge_max_offset: float = 5.0
    do_window_smoothing: bool = True
    amp_edge_window_frac: float = 512 / 4176
    do_background: bool = True
    background: BackgroundConfig = dataclasses.field(default_factory=BackgroundConfig)
    background_fraction_sample: float = 1.0
    do_detection: bool = True
    detection: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
    apply_weights: bool = True
    do_apply_amp_offset: bool = False
    estimator: str = "lsst"

    @classmethod
    def from_lsst(cls, mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> AmpOffsetConfig:
        """Build a config from LSST field names (camelCase, dotted sub-configs allowed).

        Parameters
        ----------
        mapping : mapping, optional
            ``{"ampEdgeMaxOffset": 10.0, "detection.isotropicGrow": False, ...}``.
            snake_case names are accepted as well.
        **kwargs
            More fields, same rules; a keyword overrides the mapping's field.

        Returns
        -------
        AmpOffsetConfig
            A validated config.

        Raises
        ------
        ConfigError
            For an unknown name or an invalid value.
        """
        config = cls()
        # two sources: a keyword overrides the mapping's field, however either names it
        config.update(mapping or {}).update(kwargs)
        config.validate()
        return config

    @classmethod
    def from_preset(cls, name: str, mapping: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> AmpOffsetConfig:
        """LSST's defaults with the overrides a Rubin pipeline runs (see `PRESETS`).

        Parameters
        ----------
        name : str
            Preset name, case-insensitive: ``lsstcam``, ``lsstcam-drp``, ``lsstcomcam``,
            ``hsc``, ``decam``, ``cp-flat``.
        mapping, **kwargs
            Further fields on top of the preset (LSST or snake_case names, as `from_lsst`).

        Returns
        -------
        AmpOffsetConfig
            A validated config.

        Raises
        ------
        ConfigError
            For an unknown preset (listing the known ones), name or value.
        """
        key = str(name).strip().lower().replace("_", "-")
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        config = cls()
        config.update(PRESETS[key].overrides)
        # two sources: a keyword overrides the mapping's field, however either names it
        config.update(mapping or {}).update(kwargs)
        config.validate()
        return config

    def copy(self) -> AmpOffsetConfig:
        """Return a deep copy."""
        return copy.deepcopy(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AmpOffsetConfig:
        """Inverse of `to_dict` (also accepts LSST names)."""
        return cls().update(data)

    def validate(self) -> None:
        """Check every field, like LSST's ``validate()`` and more.

        Raises
        ------
        ConfigError
            Naming the first invalid field (LSST's name) and the reason.
        """
        ints = ("amp_edge_inset", "amp_edge_width")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{_camel(name)} must be an integer, got {value!r}")
        if self.amp_edge_inset < 0:
            raise ConfigError(f"ampEdgeInset must be >= 0, got {self.amp_edge_inset}")
        if self.amp_edge_width <= 0:
            raise ConfigError(f"ampEdgeWidth must be > 0, got {self.amp_edge_width}")
        for name in ("amp_edge_min_frac", "amp_edge_max_offset", "amp_edge_window_frac",
                     "background_fraction_sample"):
            _check_number(getattr(self, name), _camel(name))
        if not 0.0 <= float(self.amp_edge_min_frac) <= 1.0:
            raise ConfigError(f"ampEdgeMinFrac must be in [0, 1], got {self.amp_edge_min_frac}")
        if not float(self.amp_edge_max_offset) >= 0.0:
            raise ConfigError(f"ampEdgeMaxOffset must be >= 0, got {self.amp_edge_max_offset}")
        if not 0.0 < float(self.amp_edge_window_frac) <= 1.0:
            raise ConfigError(
                f"ampEdgeWindowFrac must be in (0, 1], got {self.amp_edge_window_frac}"
            )
        if not float(self.background_fraction_sample) > 0.0:
            raise ConfigError(
                f"backgroundFractionSample must be > 0, got {self.background_fraction_sample}"
            )
        for name in ("do_window_smoothing", "do_background", "do_detection", "apply_weights",
                     "do_apply_amp_offset"):
            _check_bool(getattr(self, name), _camel(name))
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"estimator={self.estimator!r}: use one of {', '.join(ESTIMATORS)}"
            )
        self.background.validate()
        self.detection.validate()

    @property
    def bad_mask_planes(self) -> tuple[str, ...]:
        """Planes that make a pixel unusable for the whole task (LSST's ``bitMask``)."""
        return tuple(self.background.ignored_pixel_mask)


_LEADING_ZERO = "tag:ampoffset,2026:leading-zero"


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    """PyYAML's SafeLoader without YAML 1.1's octal and sexagesimal integers: ``010`` is
    refused (a config read with 8 for 10 was used without a word) and ``1:30`` is text,
    not 90, which the fields refuse as ``--set`` does."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # the int resolver of YAML 1.2's core schema (decimal, 0x hex, 0o octal)
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x_*[0-9a-fA-F][0-9a-fA-F_]*"
                   r"|0o_*[0-7][0-7_]*)$"),
        list("-+0123456789"))
    Loader.add_implicit_resolver(_LEADING_ZERO, re.compile(r"^[-+]?0[0-9_]+$"),
                                 list("-+0"))

    def refuse_leading_zero(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        text = loader.construct_scalar(node)
        raise yaml.constructor.ConstructorError(
            None, None, f"the number {text} has a leading zero, which YAML 1.1 reads as "
            f"octal; write it without (or quote it for text)", node.start_mark)

    Loader.add_constructor(_LEADING_ZERO, refuse_leading_zero)

    def construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
        text = loader.construct_scalar(node).replace("_", "")
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text, 0) if text.startswith("0x") else int(text)

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)

    def construct_document(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        # PyYAML keeps the last of a repeated key without a word. The mappings are checked
        # as written, before construction: merging (``<<``) rewrites an anchored mapping in
        # place, and its merged keys are meant to be overridden.
        seen: set[int] = set()
        stack = [node]
        while stack:
            item = stack.pop()
            if id(item) in seen or isinstance(item, yaml.ScalarNode):
                continue
            seen.add(id(item))
            if isinstance(item, yaml.SequenceNode):
                stack.extend(item.value)
                continue
            first: dict[Any, yaml.Mark] = {}
            for key_node, value_node in item.value:
                stack.extend((key_node, value_node))
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                        key_node, yaml.ScalarNode):
                    continue
                key = loader.construct_object(key_node)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice (first on line "
                        f"{first[key].line + 1})", key_node.start_mark)
                first[key] = key_node.start_mark
        return yaml.SafeLoader.construct_document(loader, node)

    Loader.construct_document = construct_document  # type: ignore[method-assign]
    return Loader


class _DuplicateKeyError(Exception):
    """A JSON object naming a key twice (raised by `_unique_keys`)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``dict``; `_DuplicateKeyError` for a repeated key, which `json` would
    otherwise resolve silently to its last value."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def load_document(path: Path, text: str, what: str) -> Any:
    """The JSON document ``text`` of file ``path`` (YAML for a ``.yaml``/``.yml`` name, with
    PyYAML); ``what`` names the file's kind in the message that pip installs PyYAML.

    Raises
    ------
    InputError
        For text that does not parse, or a mapping naming a key twice, naming the file and
        where (a YAML line and column).
    """
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InputError(f"{path}: reading YAML {what} needs PyYAML "
                             "(pip install 'ampoffset-dask[yaml]')") from exc
        try:
            return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader's subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(f"{path}:{where}: not valid YAML ({problem})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    except _DuplicateKeyError as exc:
        raise InputError(f"{path}: not valid JSON (the key {exc.args[0]!r} is given twice "
                         f"in one object)") from None


def as_config(config: Any) -> AmpOffsetConfig:
    """``config`` as a validated `AmpOffsetConfig`: LSST's defaults for None, a mapping of
    LSST-named fields through `AmpOffsetConfig.from_lsst`, a config as it is.

    Raises
    ------
    ConfigError
        For an invalid value (naming the field) or another type.
    """
    if config is None:
        return AmpOffsetConfig()
    if isinstance(config, AmpOffsetConfig):
        config.validate()
        return config
    if isinstance(config, Mapping):
        return AmpOffsetConfig.from_lsst(config)
    raise ConfigError(f"config must be an AmpOffsetConfig or a mapping, got {type(config)}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named set of overrides of LSST's defaults, as a Rubin pipeline configures the task.

    Attributes
    ----------
    name : str
    overrides : dict
        LSST field names -> values; every other field keeps LSST's default.
    source : str
        Where the values are set in the Rubin Science Pipelines.
    cameras : tuple of str
        Built-in cameras whose data the preset is meant for.
    """

    name: str
    overrides: Mapping[str, Any]
    source: str
    cameras: tuple[str, ...] = ()


#: Production presets, by name. The values are the overrides in the cited configuration files.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("lsstcam", {"ampEdgeMaxOffset": 10.0, "doApplyAmpOffset": False},
           "obs_lsst: ISR of LSSTCam (isrLSST, ampOffset overrides)", ("lsstcam",)),
    Preset("lsstcam-drp", {"ampEdgeMaxOffset": 10.0, "doApplyAmpOffset": True},
           "drp_pipe: LSSTCam DRP pipeline (isr ampOffset overrides)", ()),
    Preset("lsstcomcam", {"ampEdgeMaxOffset": 10.0, "doApplyAmpOffset": True},
           "obs_lsst / drp_pipe: LSSTComCam ISR (ampOffset overrides)", ("lsstcomcam",)),
    Preset("hsc", {"doApplyAmpOffset": True, "detection.thresholdType": "stdev",
                   "detection.isotropicGrow": False},
           "obs_subaru: HSC ISR config (ampOffset overrides; ampEdgeMaxOffset keeps 5.0)",
           ("hsc",)),
    Preset("decam", {"doApplyAmpOffset": True},
           "drp_pipe: DECam DRP ingredients (_ingredients/DECam/DRP.yaml, since 2026-04)",
           ("decam",)),
    Preset("cp-flat", {"ampEdgeMaxOffset": 100000.0, "ampEdgeInset": 10, "doBackground": False,
                       "doDetection": False, "doApplyAmpOffset": False},
           "cp_pipe: calibration flats for PTC / brighter-fatter kernels (ampOffset overrides)",
           ()),
)}


def list_presets() -> list[Preset]:
    """The production presets, in `PRESETS` order."""
    return list(PRESETS.values())


def preset_for_camera(camera: str | None) -> Preset | None:
    """The preset meant for a built-in camera's science data (``None`` if there is none)."""
    if not camera:
        return None
    key = str(camera).strip().lower()
    for preset in PRESETS.values():
        if key in preset.cameras:
            return preset
    return None
