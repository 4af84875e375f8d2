"""Reconstruct widget: a thin thread worker around :func:`mrisr.workflow.finetuned_frames`.

The layers become :class:`mrisr.io.Volume` objects (geometry from the layer transforms), the
library computes, and every yielded frame lands in the result layer, which is created on the
first frame (on the HR grid, in world space) and fills up frame by frame.
"""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton
from psygnal import Signal

from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume
from mrisr.napari._geometry import frame_to_layer, from_layer_axes, layer_to_volume, volume_to_layer_data
from mrisr.napari._layers import chosen, layer_combo, notify_errors

MODEL_FILE = "checkpoint file..."
#: the factor spin box's value for "no factor" (the planning scan's voxel size, else 4)
FACTOR_AUTO = 0.0
#: the fine-tune minutes spin box's smallest value (the schema's budget is > 0)
MINUTES_MIN = 0.1
#: the option fields the widget leaves to the library's defaults (tests/test_option_schema.py
#: checks that every other field has a widget of its name)
NOT_SHOWN = ("matrix", "threads", "tile")


def reconstruction_steps(
    dynamic: Volume,
    prior: Volume | None,
    options: Any,
    cancel: Callable[[], bool],
) -> Iterator[Any]:
    """What the worker runs: status strings, then one ``FrameResult`` per frame
    (:func:`mrisr.workflow.finetuned_frames`: fine-tuning first when ``options.finetune`` is on;
    ``cancel`` is polled between frames and fine-tuning steps)."""
    from mrisr.workflow import finetuned_frames

    yield from finetuned_frames(dynamic, prior, options, cancel)


#: what one unit of each map is (mrisr.reconstruct.maps), shown in the layer name beside its colour bar
MAP_UNITS = {"disagreement": "fraction of local signal", "unmeasured": "SR intensity, a.u."}
#: layer metadata of result and map layers: how many frames the run has written (frames ``0..n-1``), and
#: whether the layer is hidden only because the frame on the slider is not filled yet
FRAMES_FILLED = "mrisr_frames_filled"
HIDDEN_UNFILLED = "mrisr_hidden_unfilled"


class ReconstructWidget(Container):
    """Choose the dynamic series, an optional prior, the model and device; run, watch, cancel."""

    #: emitted with the worker after it is built and before it starts
    worker_created = Signal(object)
    #: emitted when a run ends: ``"done"``, ``"cancelled"`` or ``"error"``
    run_finished = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from mrisr.reconstruct.options import DEVICES, option_bounds, option_choices, option_default, option_help

        def schema(name: str) -> dict[str, Any]:
            """Value and tooltip of option ``name`` (and its choices, for a choice) from the option schema."""
            extra = {"choices": list(option_choices(name))} if option_choices(name) else {}
            return {"value": option_default(name), "tooltip": option_help(name), **extra}

        factor_low, _, factor_high = option_bounds("factor")
        _, _, minutes_high = option_bounds("finetune_minutes")
        self._viewer = viewer
        # roles guessed from the layers (guess_role): a 4-D series is the dynamic, a T1w / planning / anat
        # scan the prior, and the layer chosen as dynamic is never offered as its own prior
        self.dynamic = layer_combo(viewer, "dynamic series", ndims=(4, 3), prefer=("lr",))
        self.prior = layer_combo(viewer, "prior (planning)", ndims=(3,), prefer=("planning",), optional=True,
                                 exclude=lambda: self.dynamic.value)
        self.dynamic.changed.connect(lambda _value: self.prior.reset_choices())
        self.method = ComboBox(label="method", **schema("method"))
        self.model = ComboBox(label="model", choices=["default", "default-noprior", MODEL_FILE], **schema("model"))
        self.model_file = FileEdit(label="model file", mode="r", filter="*.safetensors", visible=False)
        self.prior_mode = ComboBox(label="prior of frame t", **schema("prior_mode"))
        # 0 stands for "no factor" (the planning scan's voxel size, else 4); any other value is the factor
        self.factor = FloatSpinBox(label=f"in-plane factor ({FACTOR_AUTO:g}: auto, else {factor_low:g}-{factor_high:g})",
                                   min=FACTOR_AUTO, max=factor_high, step=0.5,
                                   **{**schema("factor"), "value": FACTOR_AUTO})
        self.data_consistency = CheckBox(text="data consistency (keep measured k-space)", **schema("data_consistency"))
        self.finetune = CheckBox(text="fine-tune on the planning scan", **schema("finetune"))
        # a spin box has no open lower bound (the budget is > 0): it starts a little above it
        self.finetune_minutes = FloatSpinBox(label="fine-tune minutes", min=MINUTES_MIN, max=minutes_high, step=0.5,
                                             **schema("finetune_minutes"))
        self.device = ComboBox(label="device", choices=list(DEVICES), value=option_default("device"),
                               tooltip=option_help("device"))
        self.precision = ComboBox(label="precision", **schema("precision"))
        self.sparse_changes = CheckBox(text="sparse changes: sharpen what entered, cancel what left",
                                       **schema("sparse_changes"))
        self.line_changes = CheckBox(text="line changes: show a needle or catheter as a line, not dots",
                                     **schema("line_changes"))
        self.match_contrast = CheckBox(text="match contrast: map a planning scan of another contrast",
                                       **schema("match_contrast"))
        self.denoise_prior = CheckBox(text="denoise prior: shrink the planning scan's own noise",
                                      **schema("denoise_prior"))
        self.follow = CheckBox(text="show each new frame", value=True)
        self.maps = CheckBox(text="maps: disagreement with the prior, unmeasured detail", **schema("maps"))
        self.run_button = PushButton(text="Reconstruct")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="frames", value=0, min=0, max=1)
        self.status = Label(value="")
        self.extend([self.dynamic, self.prior, self.method, self.model, self.model_file, self.prior_mode, self.factor,
                     self.data_consistency, self.finetune, self.finetune_minutes, self.device, self.precision,
                     self.sparse_changes, self.line_changes, self.match_contrast, self.denoise_prior, self.follow,
                     self.maps, self.run_button, self.cancel_button, self.progress, self.status])
        self.model.changed.connect(lambda value: setattr(self.model_file, "visible", value == MODEL_FILE))
        self.method.changed.connect(self._method_changed)
        self.run_button.changed.connect(notify_errors(self.run))
        self.cancel_button.changed.connect(self._cancel_clicked)
        self.worker: Any = None
        self.result_layer: Any = None
        #: the map layers (``disagreement``, ``unmeasured``), filled frame by frame like the result
        self.map_layers: dict[str, Any] = {}
        self._cancel = threading.Event()
        self._frames_done = 0
        self._total = 0
        self._outcome = "done"
        self._pbar: Any = None
        self._showing = False
        self._finish_pending = False
        viewer.dims.events.point.connect(self._on_step)

    # ------------------------------------------------------------------ inputs
    def options(self) -> Any:
        """:class:`mrisr.reconstruct.ReconstructOptions` from the widget's fields."""
        from mrisr.reconstruct import ReconstructOptions

        model: str = str(self.model.value)
        if model == MODEL_FILE:
            path = Path(str(self.model_file.value))
            if not path.is_file():
                raise MrisrInputError(f"{path}: model file not found; choose an mrisr .safetensors checkpoint")
            model = str(path)
        factor = None if float(self.factor.value) == FACTOR_AUTO else float(self.factor.value)
        return ReconstructOptions(method=str(self.method.value), model=model, prior_mode=str(self.prior_mode.value),
                                  factor=factor, maps=bool(self.maps.value),
                                  data_consistency=bool(self.data_consistency.value), device=str(self.device.value),
                                  precision=str(self.precision.value),
                                  sparse_changes=bool(self.sparse_changes.value),
                                  line_changes=bool(self.line_changes.value),
                                  match_contrast=bool(self.match_contrast.value),
                                  denoise_prior=bool(self.denoise_prior.value),
                                  finetune=bool(self.finetune.value),
                                  finetune_minutes=float(self.finetune_minutes.value))

    @property
    def running(self) -> bool:
        return self.worker is not None

    # ------------------------------------------------------------------ run / cancel
    def run(self) -> Any:
        """Start the reconstruction in a thread; returns the worker."""
        from napari.qt.threading import create_worker

        if self.running:
            raise MrisrInputError("a reconstruction is already running; cancel it first")
        dynamic_layer = chosen(self.dynamic, "dynamic series")
        dynamic = layer_to_volume(dynamic_layer)
        prior = layer_to_volume(self.prior.value) if self.prior.value is not None else None
        options = self.options()
        options.validate()
        self._cancel.clear()
        self._frames_done, self._total, self._outcome, self._error = 0, dynamic.n_frames, "done", ""
        self._dynamic, self._name = dynamic, f"{dynamic_layer.name} SR"
        self.result_layer = None
        self.map_layers = {}
        worker = create_worker(reconstruction_steps, dynamic, prior, options, self._cancel.is_set,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.errored.connect(self._on_errored)
        worker.warned.connect(self._on_warned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.max, self.progress.value = self._total, 0
        self.status.value = "starting"
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._pbar = napari.utils.progress(total=self._total, desc=f"mrisr: {self._name}")
        self.worker_created.emit(worker)
        worker.start()
        return worker

    def request_cancel(self) -> None:
        """Ask the running reconstruction to stop after the current frame (safe from any thread)."""
        self._cancel.set()
        worker = self.worker
        if worker is not None:
            worker.quit()

    def _cancel_clicked(self, *_: Any) -> None:
        if self.running:
            self.status.value = f"cancelling after frame {self._frames_done}/{self._total}"
            self.request_cancel()

    # ------------------------------------------------------------------ worker signals (main thread)
    def _on_yielded(self, item: Any) -> None:
        # adding a layer or updating napari's progress can process events, so "finished" may
        # arrive while a frame is being shown: finish only after the frame is in
        self._showing = True
        try:
            self._show_item(item)
        finally:
            self._showing = False
        if self._finish_pending:
            self._finish_pending = False
            self._on_finished()

    def _show_item(self, item: Any) -> None:
        if isinstance(item, str):
            # once frames are done, a message never hides how far the run is (status and bar agree)
            done = f"frame {self._frames_done}/{self._total}: " if self._frames_done else ""
            self.status.value = done + item
            return
        if self.result_layer is None:
            self.result_layer = self._create_layer(item)
            if item.maps is not None:
                self.map_layers = self._create_map_layers(item)
        fills = [(self.result_layer, item.sr)]
        if item.maps is not None:
            fills += [(layer, getattr(item.maps, name)) for name, layer in self.map_layers.items()]
        for layer, values in fills:
            if layer.data.ndim == 4:
                layer.data[item.index] = frame_to_layer(values, layer)
            else:
                layer.data[...] = frame_to_layer(values, layer)
            layer.metadata[FRAMES_FILLED] = item.index + 1
            layer.refresh()
        data = self.result_layer.data
        # before the status and progress updates, which can process events (and so the next frames):
        # the slider follows the frames in their order, and the layers show the frame once it is filled
        if self.follow.value and data.ndim == 4:
            self._show_frame(item.index)
        for layer, _ in fills:
            self._hide_unfilled(layer)
        self._frames_done = item.index + 1
        # the status first: napari's progress update can process events (and show the widget) before it returns
        self.status.value = f"frame {self._frames_done}/{item.total} ({item.seconds:.2f} s)"
        self.progress.value = self._frames_done
        if self._pbar is not None:
            self._pbar.update(1)

    def _method_changed(self, value: str) -> None:
        network = value == "network"
        for widget in (self.model, self.prior_mode, self.data_consistency, self.finetune, self.finetune_minutes,
                       self.precision):
            widget.enabled = network
        # the gate (and so the sparse change before it) runs in keyhole-gated and the network
        self.sparse_changes.enabled = value in ("network", "keyhole-gated")
        self.line_changes.enabled = value in ("network", "keyhole-gated")
        self.match_contrast.enabled = value in ("network", "keyhole-gated")
        self.denoise_prior.enabled = value in ("network", "keyhole-gated")

    def _create_layer(self, first: Any, name: str | None = None, role: str = "sr", **layer_kwargs: Any) -> Any:
        shape = first.sr.shape
        dynamic = self._dynamic
        # the layer's (T, Z, Y, X) contiguous, handed over as (X, Y, Z[, T]) so volume_to_layer_data
        # returns it unchanged
        layer_shape = ((self._total,) if dynamic.is_4d else ()) + tuple(shape[::-1])
        data = from_layer_axes(np.zeros(layer_shape, dtype=np.float32))
        result = Volume(data=data, affine=first.hr_affine, tr=dynamic.tr, qform_code=dynamic.qform_code,
                        sform_code=dynamic.sform_code)
        if not layer_kwargs:
            high = float(np.percentile(first.sr, 99.9)) or 1.0
            layer_kwargs = {"colormap": "gray", "contrast_limits": (0.0, high)}
        visible = layer_kwargs.pop("visible", True)
        array, kwargs, _ = volume_to_layer_data(result, name or self._name, role=role, **layer_kwargs)
        # hidden while the frame on the slider is not filled yet (an empty frame would cover the inputs):
        # shown with its first frame, hidden again if the slider moves ahead of the run (_hide_unfilled)
        kwargs["metadata"].update({FRAMES_FILLED: 0, HIDDEN_UNFILLED: visible})
        layer = self._viewer.add_image(array, visible=False, **kwargs)
        units = MAP_UNITS.get(role)
        if units is not None and hasattr(layer, "colorbar"):
            # the map's scale, drawn whenever the layer is visible (napari draws a layer's overlays only
            # then); the unit is in the layer name, as napari's colour bar has no label
            layer.colorbar.visible = True
        return layer

    def _hide_unfilled(self, layer: Any) -> None:
        """Hide a result or map layer while the frame on the slider is one the run has not filled
        (a blank, opaque frame would hide the inputs), and show it again (when it was this that hid it)
        once that frame is filled or the slider is back on a filled one."""
        meta = layer.metadata
        if FRAMES_FILLED not in meta:
            return
        frame = 0
        if layer.ndim == 4:
            point = np.asarray(self._viewer.dims.point, dtype=np.float64)
            if point.size < layer.ndim:
                return
            frame = int(np.round(layer.world_to_data(point[-layer.ndim:])[0]))
            if not 0 <= frame < layer.data.shape[0]:
                return  # napari draws nothing of this layer there
        filled = frame < int(meta[FRAMES_FILLED])
        if not filled and layer.visible:
            meta[HIDDEN_UNFILLED] = True
            layer.visible = False
        elif filled and meta.get(HIDDEN_UNFILLED):
            meta[HIDDEN_UNFILLED] = False
            layer.visible = True

    def _on_step(self, event: Any = None) -> None:
        for layer in list(self._viewer.layers):
            self._hide_unfilled(layer)

    def _create_map_layers(self, first: Any) -> dict[str, Any]:
        """Both maps as layers over the SR layer: warm colours, additive, so grey anatomy shows through."""
        high = float(np.percentile(first.sr, 99.9)) or 1.0
        return {
            "disagreement": self._create_layer(first, f"{self._name} disagreement [{MAP_UNITS['disagreement']}]",
                                               "disagreement",
                                               colormap="inferno", blending="additive", opacity=0.7,
                                               contrast_limits=(0.0, 0.5)),
            "unmeasured": self._create_layer(first, f"{self._name} unmeasured [{MAP_UNITS['unmeasured']}]",
                                             "unmeasured", colormap="cyan",
                                             blending="additive", opacity=0.5, contrast_limits=(0.0, 0.25 * high),
                                             visible=False),
        }

    def _show_frame(self, index: int) -> None:
        axis = self._viewer.dims.ndim - 4
        world = self.result_layer.data_to_world((index, 0, 0, 0))
        self._viewer.dims.set_point(axis, world[0])

    def _on_warned(self, warning: Any) -> None:
        from napari.utils.notifications import show_warning

        show_warning(str(warning[0]))

    def _on_errored(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._outcome = "error"
        if isinstance(exc, MrisrInputError):
            show_error(str(exc))
        else:
            show_error(f"reconstruction failed: {type(exc).__name__}: {exc}")
        self._error = f"{type(exc).__name__}: {exc}"

    def _on_finished(self) -> None:
        if self._showing:
            self._finish_pending = True
            return
        if self._outcome != "error" and self._cancel.is_set() and self._frames_done < self._total:
            self._outcome = "cancelled"
            self.status.value = f"cancelled after {self._frames_done}/{self._total} frame(s)"
        elif self._outcome == "done":
            self.status.value = f"done: {self._frames_done} frame(s) -> layer {self._name!r}"
        else:
            self.status.value = f"failed after {self._frames_done}/{self._total} frame(s): {self._error}"
        if self._outcome != "done" and self.result_layer is not None:
            self.result_layer.name = f"{self._name} (partial {self._frames_done}/{self._total})"
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.run_finished.emit(self._outcome)
