"""One connection's work: group the incoming items into frames and super-resolve each as it completes.

:func:`process` has python-ismrmrd-server's module contract, ``process(connection, config,
metadata)``, so this module drops into that server or a FIRE container as the config ``mrisr``
(see docs/serve.md). The connection is iterated for ``ismrmrd.Image`` / ``ismrmrd.Acquisition`` /
``ismrmrd.Waveform`` items; images go back with ``connection.send_image``, errors and notes with
``connection.send_logging``, and the session ends with ``connection.send_close``.

Frames: items are grouped by their ``(repetition, phase)`` counters (so a DICOM dynamic that
``dicom2mrd.py`` wrote with only the phase counter varying groups by phase). A frame is complete
when an acquisition carries the last-in-repetition or last-in-measurement flag, when it holds as
many items as the first frame did (or, for images, as many slices as the header's encoding
limits name), when an item of a later frame arrives, or at the close message.

Nothing here reconstructs: raw acquisitions become a frame with :mod:`mrisr.io.mrd`, images become
a volume with :mod:`mrisr.io.mrd_images`, and each frame goes through
:func:`mrisr.reconstruct.pipeline.prepare_state` (once per dynamic) and
:func:`~mrisr.reconstruct.pipeline.reconstruct_frame`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.load import check_frame
from mrisr.io.mrd_images import GEOMETRIES, ImageStack, images_like, looks_like_dicom2mrd, raw_stack, stack_images
from mrisr.io.volume import Volume
from mrisr.serve.header import LenientHeader, parse_header
from mrisr.serve.protocol import ProtocolError
from mrisr.serve.store import PriorStore, describe_key, prior_key

__all__ = ["PLANNING_CONFIG", "DYNAMIC_CONFIG", "ServeRequest", "SessionResult", "parse_request", "process",
           "run_session"]

log = logging.getLogger("mrisr.serve")

#: the config of a connection that sends the planning series, and of one that sends the dynamic
PLANNING_CONFIG = "mrisr-planning"
DYNAMIC_CONFIG = "mrisr"
#: config names of each role: the server's, and the module names python-ismrmrd-server / FIRE
#: import (the shims in docker/fire/)
_ROLE_OF_CONFIG = {DYNAMIC_CONFIG: "dynamic", "mrisr_fire": "dynamic",
                   PLANNING_CONFIG: "planning", "mrisr_fire_planning": "planning"}
#: parameters of the JSON text / config that are not reconstruction options
_SERVE_PARAMETERS = {"config", "customconfig", "prior", "series_offset", "geometry"}
#: options that make no sense inline (minutes of work before the first frame)
_REFUSED_OPTIONS = {"finetune", "finetune_minutes"}
#: ``image_series_index`` of the SR series = the input's + this (maps follow)
DEFAULT_SERIES_OFFSET = 100
_MAP_NAMES = ("disagreement", "unmeasured")
#: network models kept loaded between connections
_MODEL_CACHE: OrderedDict = OrderedDict()
_MODEL_CACHE_SIZE = 2
#: the store :func:`process` uses when its caller (python-ismrmrd-server, FIRE) gives none
DEFAULT_STORE = PriorStore()


@dataclass
class ServeRequest:
    """What a connection asks for, from its config and JSON parameters.

    Attributes:
        role: ``planning`` (store the series) or ``dynamic`` (super-resolve it).
        options: reconstruction options (server defaults, then the connection's parameters).
        prior_path: a planning scan file that overrides the stored one.
        series_offset: the SR series' ``image_series_index`` is the input's plus this.
        geometry: how image headers are read: ``mrd`` (``position`` is the image centre, ISMRMRD's
            definition) or ``dicom2mrd`` (python-ismrmrd-server's dicom2mrd.py layout; see
            :mod:`mrisr.io.mrd_images`).
    """

    role: str
    options: dict
    prior_path: Path | None = None
    series_offset: int = DEFAULT_SERIES_OFFSET
    geometry: str = "mrd"


@dataclass
class SessionResult:
    """How a connection went.

    Attributes:
        role: ``planning`` or ``dynamic``.
        frames: frames super-resolved (or 1 for a stored planning scan).
        images_sent: images sent back.
        error: the one-line error that ended the session, or ``None``.
        latencies: per frame, seconds from its last message received to its last image sent.
        notes: what was logged to the client besides errors.
    """

    role: str = "dynamic"
    frames: int = 0
    images_sent: int = 0
    error: str | None = None
    latencies: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_request(config, defaults: dict | None = None, role: str | None = None) -> ServeRequest:
    """The request a config names: a config name (``mrisr`` / ``mrisr-planning``), config text holding
    JSON, or the parsed JSON (``{"parameters": {...}}``) python-ismrmrd-server hands to ``process``.

    ``role`` (``planning`` / ``dynamic``) overrides the role the config name gives.

    Raises:
        MrisrInputError: an unknown config name, JSON that is not an object, an option mrisr does
            not know or that cannot run inline, a bad option value.
    """
    from mrisr.reconstruct.options import ReconstructOptions

    if isinstance(config, str) and config.lstrip().startswith("{"):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise MrisrInputError(f"config text is not valid JSON ({exc.msg} at character {exc.pos}); "
                                  "send a config name or a JSON object") from None
    if isinstance(config, dict):
        parameters = config.get("parameters", config)
        if not isinstance(parameters, dict):
            raise MrisrInputError("config JSON 'parameters' is not an object; send {\"parameters\": {...}}")
        name = str(parameters.get("customconfig") or parameters.get("config") or DYNAMIC_CONFIG)
    elif isinstance(config, str) or config is None:
        name, parameters = (config or DYNAMIC_CONFIG).strip(), {}
    else:
        raise MrisrInputError(f"config of type {type(config).__name__}; send a config name or JSON parameters")
    if role is None and name not in _ROLE_OF_CONFIG:
        raise MrisrInputError(f"config {name!r} is not one of {DYNAMIC_CONFIG}, {PLANNING_CONFIG}; "
                              f"send -c {DYNAMIC_CONFIG} (the dynamic) or -c {PLANNING_CONFIG} (the planning series)")
    fields = set(ReconstructOptions.model_fields)
    unknown = sorted(set(parameters) - fields - _SERVE_PARAMETERS)
    if unknown:
        raise MrisrInputError(f"unknown parameter(s) {', '.join(unknown)}; the options are "
                              f"{', '.join(sorted(fields - _REFUSED_OPTIONS))}, prior, series_offset, geometry")
    refused = sorted(set(parameters) & _REFUSED_OPTIONS)
    if refused:
        raise MrisrInputError(f"parameter(s) {', '.join(refused)} cannot run inline (minutes before the first frame); "
                              "fine-tune offline with 'mrisr finetune' and pass the checkpoint as model")
    options = dict(defaults or {})
    options.update({key: value for key, value in parameters.items() if key in fields})
    ReconstructOptions(**options)  # a bad value is refused here, in the options' own words
    prior = parameters.get("prior")
    try:
        offset = int(parameters.get("series_offset", DEFAULT_SERIES_OFFSET))
    except (TypeError, ValueError):
        raise MrisrInputError(f"series_offset {parameters.get('series_offset')!r} is not an integer") from None
    geometry = str(parameters.get("geometry", "mrd"))
    if geometry not in GEOMETRIES:
        raise MrisrInputError(f"geometry {geometry!r} is not one of {', '.join(GEOMETRIES)}; send dicom2mrd for "
                              "series converted by python-ismrmrd-server's dicom2mrd.py, else leave it out")
    role = role or _ROLE_OF_CONFIG[name]
    return ServeRequest(role=role, options=options, prior_path=Path(prior) if prior else None, series_offset=offset,
                        geometry=geometry)


def _counter(item) -> tuple[int, int]:
    return int(item.repetition if hasattr(item, "repetition") and not hasattr(item, "idx") else item.idx.repetition), \
        int(item.phase if not hasattr(item, "idx") else item.idx.phase)


def _image_slice_limit(header) -> int | None:
    try:
        limit = header.encoding[0].encodingLimits.slice
        count = int(limit.maximum) - int(limit.minimum) + 1
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return count if count > 0 else None


class FrameGrouper:
    """Items in, complete frames out (see the module docstring for when a frame is complete).

    Args:
        image_slices: images per frame when the header says so (``None``: learned from the first
            frame); acquisitions per frame are always learned (a dynamic acquires only part of the
            encoded lines, so the header's limits do not count them).
    """

    def __init__(self, image_slices: int | None = None) -> None:
        self.image_slices = image_slices
        self.expected: int | None = None
        self.key: tuple[int, int] | None = None
        self.items: list = []
        self.last_time = 0.0
        self.kind: str | None = None

    def add(self, item, received: float) -> list[tuple[list, float]]:
        import ismrmrd

        kind = "image" if isinstance(item, ismrmrd.Image) else "acquisition"
        if self.kind is None:
            self.kind = kind
            self.expected = self.image_slices if kind == "image" else None
        elif kind != self.kind:
            raise MrisrInputError(f"the stream mixes images and acquisitions (an {kind} after {self.kind}s); "
                                  "send one kind per series")
        done = []
        key = _counter(item)
        if self.key is not None and key != self.key and self.items:
            done.append(self._close())
        self.key = key
        self.items.append(item)
        self.last_time = received
        flagged = kind == "acquisition" and (item.is_flag_set(ismrmrd.ACQ_LAST_IN_REPETITION)
                                             or item.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT))
        three_d = kind == "image" and int(item.getHead().matrix_size[2]) > 1
        if flagged or three_d or (self.expected is not None and len(self.items) >= self.expected):
            done.append(self._close())
        return done

    def _close(self) -> tuple[list, float]:
        items, self.items = self.items, []
        if self.expected is None:
            self.expected = len(items)
        return items, self.last_time

    def flush(self) -> list[tuple[list, float]]:
        return [self._close()] if self.items else []


def _load_model(options):
    from mrisr.reconstruct.pipeline import choose_model_name, load_model_for

    def key(has_prior: bool):
        return (choose_model_name(options, has_prior), options.device, options.precision,
                tuple(options.tile) if options.tile else None, has_prior)

    def load(has_prior: bool):
        cache_key = key(has_prior)
        model = _MODEL_CACHE.get(cache_key)
        if model is None:
            model = load_model_for(options, has_prior)
            _MODEL_CACHE[cache_key] = model
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        _MODEL_CACHE.move_to_end(cache_key)
        return model

    return load


class _Session:
    def __init__(self, connection, request: ServeRequest, header, store: PriorStore,
                 cancel: Callable[[], bool] | None) -> None:
        self.connection = connection
        self.request = request
        self.header = header
        self.store = store
        self.cancel = cancel or (lambda: False)
        self.result = SessionResult(role=request.role)
        self.name = self._series_name()
        self.state = None
        self.reference: tuple | None = None
        self.planning: ImageStack | None = None
        self.rescale_noted = False

    def _series_name(self) -> str:
        protocol = getattr(getattr(self.header, "measurementInformation", None), "protocolName", None)
        return f"series {protocol}" if protocol else "series"

    def note(self, level: str, text: str) -> None:
        getattr(log, level.lower())("%s", text)
        self.result.notes.append(text)
        try:
            self.connection.send_logging(level.upper(), text)
        except (OSError, ProtocolError):
            pass  # the client may be gone; the log has it

    def run(self) -> None:
        import ismrmrd

        if isinstance(self.header, LenientHeader):
            self.note("WARNING", f"the XML header does not pass ISMRMRD's schema ({self.header.reason}); read only the "
                                 "study, frame of reference, patient ID, protocol name and encoding fields mrisr uses")
        grouper = FrameGrouper(_image_slice_limit(self.header))
        skipped = 0
        for item in self.connection:
            received = time.perf_counter()
            if item is None:  # python-ismrmrd-server's Connection yields None at the close message
                break
            if isinstance(item, str):
                log.info("text from the client: %s", item[:200])
                continue
            if isinstance(item, ismrmrd.Waveform):
                continue
            if isinstance(item, ismrmrd.Image) and int(item.image_type) not in (0, ismrmrd.IMTYPE_MAGNITUDE,
                                                                                 ismrmrd.IMTYPE_COMPLEX):
                skipped += 1
                continue
            if isinstance(item, ismrmrd.Acquisition):
                from mrisr.io.mrd_header import is_image_acquisition

                if not is_image_acquisition(item.flags):
                    continue
            elif not isinstance(item, ismrmrd.Image):
                raise MrisrInputError(f"unexpected item of type {type(item).__name__} on the stream")
            for items, last in grouper.add(item, received):
                self.frame(items, last)
            if self.cancel():
                self.note("WARNING", "the server is stopping; the series ends here")
                return
        for items, last in grouper.flush():
            self.frame(items, last)
        if skipped:
            self.note("INFO", f"{skipped} phase/real/imaginary images skipped (mrisr super-resolves magnitude images)")
        if self.request.role == "planning":
            self.store_planning()
        elif self.result.frames == 0:
            self.note("WARNING", f"{self.name}: no frames arrived; nothing to super-resolve")

    def stack(self, items: list) -> ImageStack:
        import ismrmrd

        if isinstance(items[0], ismrmrd.Image):
            if self.request.geometry == "mrd" and self.result.frames == 0 and looks_like_dicom2mrd(items[0]):
                self.note("WARNING", f"{self.name}: image position is the DICOM ImagePositionPatient (the first voxel), "
                                     "as python-ismrmrd-server's dicom2mrd.py writes it; read as the image centre here. "
                                     'Send {"parameters": {"geometry": "dicom2mrd"}} with this series and its '
                                     "planning series so they line up")
            stack = stack_images(items, self.name, self.request.geometry)
            if stack.rescaled and not self.rescale_noted:
                self.rescale_noted = True
                self.note("INFO", f"{self.name}: pixels rescaled by each image's RescaleSlope / RescaleIntercept "
                                  "(image meta or its DicomJson); the SR images carry RescaleSlope 1, "
                                  "RescaleIntercept 0")
            return stack
        from mrisr.io.mrd import frame_from_acquisitions

        image, affine, layout = frame_from_acquisitions(items, self.header, self.name)
        nz = image.shape[2] if not layout.three_d else 1
        return raw_stack(image, affine, layout, items, first_index=self.result.frames * nz + 1)

    def frame(self, items: list, last: float) -> None:
        stack = self.stack(items)
        if self.request.role == "planning":
            if self.planning is None:
                self.planning = stack
            self.result.frames += 1
            return
        self.reconstruct(stack, last)

    def store_planning(self) -> None:
        if self.planning is None:
            raise MrisrInputError(f"{self.name}: the planning connection sent no images or acquisitions; "
                                  "send the planning series")
        key = prior_key(self.header)
        if key is None:
            raise MrisrInputError(f"{self.name}: the XML header names no study, frame of reference or patient ID, "
                                  "so the planning scan could not be found again; send the scanner's header")
        volume = Volume(data=self.planning.data, affine=self.planning.affine, qform_code=1, sform_code=1,
                        source=Path(f"planning ({describe_key(key)})"))
        try:
            dropped = self.store.put(key, volume)
        except ValueError as exc:
            raise MrisrInputError(f"{self.name}: {exc}") from None
        extra = f" ({self.result.frames - 1} later frames ignored)" if self.result.frames > 1 else ""
        self.note("INFO", f"stored planning scan {'x'.join(map(str, volume.spatial_shape))} for {describe_key(key)}"
                          f"{extra}" + (f"; dropped {len(dropped)} older" if dropped else ""))
        self.result.frames = 1

    def find_prior(self) -> Volume | None:
        if self.request.prior_path is not None:
            from mrisr.io.load import load

            self.note("INFO", f"prior from the parameters: {self.request.prior_path}")
            return load(self.request.prior_path)
        key = prior_key(self.header)
        prior = self.store.get(key)
        if prior is None:
            self.note("WARNING", f"no planning scan stored for {describe_key(key)}; super-resolving without a prior "
                                 f"(send the planning series first with config {PLANNING_CONFIG})")
        return prior

    def prepare(self, stack: ImageStack) -> None:
        from mrisr.reconstruct.options import ReconstructOptions
        from mrisr.reconstruct.pipeline import prepare_state

        prior = self.find_prior()
        options = dict(self.request.options)
        if prior is None and options.get("method", "network") != "network":
            self.note("WARNING", f"method {options['method']} needs a planning scan; using the network without one")
            options["method"] = "network"
        options = ReconstructOptions(**options)
        dynamic = Volume(data=stack.data, affine=stack.affine, qform_code=1, sform_code=1, source=Path(self.name))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = _load_model(options)(prior is not None) if options.method == "network" else None
            self.state = prepare_state(dynamic, prior, options, stack.data, model=model)
        for warning in caught:
            self.note("WARNING", str(warning.message))
        self.reference = (stack.shape, stack.affine)
        self.note("INFO", f"{self.name}: {'x'.join(map(str, stack.shape))} -> "
                          f"{'x'.join(map(str, self.state.grid.hr_shape))}, "
                          f"{'model ' + str(options.model) if options.method == 'network' else 'method ' + options.method}"
                          f"{', with' if prior is not None else ', without'} a planning scan")

    def reconstruct(self, stack: ImageStack, last: float) -> None:
        from mrisr.reconstruct.pipeline import reconstruct_frame

        check_frame(stack.data, self.name, self.result.frames)
        if self.state is None:
            self.prepare(stack)
        elif stack.shape != self.reference[0] or np.abs(stack.affine - self.reference[1]).max() > 1e-3:
            raise MrisrInputError(
                f"{self.name}: frame {self.result.frames} has matrix {'x'.join(map(str, stack.shape))}"
                + ("" if stack.shape != self.reference[0] else " at another position or orientation")
                + f", the series started with {'x'.join(map(str, self.reference[0]))}; send one matrix per series"
            )
        result = reconstruct_frame(self.state, stack.data)
        base = int(stack.heads[0].image_series_index) + self.request.series_offset
        images = images_like(stack, result.sr, base)
        if result.maps is not None:
            for offset, name in enumerate(_MAP_NAMES, start=1):
                images += images_like(stack, getattr(result.maps, name), base + offset,
                                      {"ImageComments": f"mrisr {name} map", "SequenceDescriptionAdditional": name})
        self.connection.send_image(images)
        self.result.latencies.append(time.perf_counter() - last)
        self.result.images_sent += len(images)
        self.result.frames += 1


def run_session(connection, config, metadata, store: PriorStore | None = None, defaults: dict | None = None,
                cancel: Callable[[], bool] | None = None, role: str | None = None) -> SessionResult:
    """Serve one connection after its config and header: store a planning series or super-resolve a dynamic.

    Errors do not escape: each becomes one logged line, a logging message to the client, and
    :attr:`SessionResult.error`. The close message is always sent (when the client is still there).

    Args:
        connection: :class:`~mrisr.serve.protocol.MrdConnection` or python-ismrmrd-server's ``Connection``.
        config: the config name, config text or parsed JSON parameters (see :func:`parse_request`).
        metadata: the XML header, as text or parsed.
        store: where planning scans are kept (default: this process's :data:`DEFAULT_STORE`).
        defaults: reconstruction options the connection's parameters override.
        cancel: polled after each item; true ends the session cleanly (server shutdown).
        role: ``planning`` or ``dynamic`` whatever the config name says (the FIRE shims).
    """
    result = SessionResult()
    try:
        request = parse_request(config, defaults, role)
        result.role = request.role
        session = _Session(connection, request, parse_header(metadata), store if store is not None else DEFAULT_STORE,
                           cancel)
        result = session.result
        try:
            session.run()
        finally:
            if session.state is not None:
                session.state = None  # the HR prior and tracker are freed before the next connection
    except (MrisrInputError, ProtocolError, ValueError) as exc:
        result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # a server outlives a bug in one connection; the traceback goes to the debug log
        log.debug("session failed", exc_info=True)
        result.error = f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if result.error is not None:
        log.error("%s", result.error)
        try:
            connection.send_logging("ERROR", result.error)
        except (OSError, ProtocolError):
            pass
    try:
        connection.send_close()
    except (OSError, ProtocolError):
        pass  # the client has gone (e.g. it disconnected mid-frame)
    return result


def process(connection, config, metadata, role: str | None = None) -> SessionResult:
    """python-ismrmrd-server's module entry point: ``process(connection, config, metadata)``.

    python-ismrmrd-server and FIRE import the module the config names and call its ``process``;
    the shims ``docker/fire/mrisr_fire.py`` (the dynamic) and ``mrisr_fire_planning.py`` (the
    planning series) call this function (docs/serve.md). ``config`` is the config name or the
    JSON parameters, ``metadata`` the parsed header (or its text). Planning scans are kept in this
    process's :data:`DEFAULT_STORE`, so the server must run without ``--multiprocessing``.
    """
    return run_session(connection, config, metadata, role=role)
