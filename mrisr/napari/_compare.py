"""Compare widget: LR, sinc, SR and ground truth side by side, |SR - GT| and SSIM per frame.

The sinc baseline is the LR series zero-filled in k-space onto the SR grid; metrics come from
:func:`mrisr.metrics.score_frames`: SSIM inside the object (:func:`mrisr.metrics.object_mask`)
first, the whole volume (mostly background) beside it, dashed.
"""

from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, Container, Label, PushButton
from psygnal import Signal

from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume
from mrisr.napari._geometry import layer_to_volume, show_inplane, volume_to_layer_data
from mrisr.napari._layers import chosen, layer_combo, notify_errors

GRID_ATOL_MM = 1e-3


def sinc_on_grid(lr: Volume, hr: Volume) -> Volume:
    """The LR series zero-filled in k-space onto ``hr``'s in-plane matrix (sinc interpolation)."""
    from mrisr.io.geometry import refine_affine
    from mrisr.kspace import zero_fill

    if lr.spatial_shape[2] != hr.spatial_shape[2] or lr.spatial_shape[0] > hr.spatial_shape[0] \
            or lr.spatial_shape[1] > hr.spatial_shape[1]:
        raise MrisrInputError(
            f"LR matrix {lr.spatial_shape} cannot be zero-filled to the SR matrix {hr.spatial_shape}; "
            "choose the LR series the SR result was made from"
        )
    frames = [zero_fill(frame, hr.spatial_shape[:2]) for frame in lr.frames()]
    data = np.stack(frames, axis=-1) if lr.is_4d else frames[0]
    return lr.with_data(data.astype(np.float32), affine=refine_affine(lr.affine, lr.spatial_shape, hr.spatial_shape))


def on_grid(volume: Volume, reference: Volume) -> np.ndarray:
    """``volume``'s data on ``reference``'s grid (itself when the grids agree, else linear resampling)."""
    if volume.spatial_shape == reference.spatial_shape and np.allclose(volume.affine, reference.affine,
                                                                        atol=GRID_ATOL_MM):
        return np.asarray(volume.data, dtype=np.float32)
    from mrisr.reconstruct import resample_to_grid

    frames = [resample_to_grid(Volume(frame, volume.affine), reference.spatial_shape, reference.affine)
              for frame in volume.frames()]
    return np.stack(frames, axis=-1) if volume.is_4d else frames[0]


def ssim_per_frame(series: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, list[float]]:
    """SSIM of every frame of each named ``(X, Y, Z[, T])`` series against ``truth``, inside the object."""
    return {name: scores["tissue"] for name, scores in tissue_and_whole(series, truth).items()}


def tissue_and_whole(series: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """``{name: {"tissue": [SSIM per frame inside the object], "whole": [... whole volume]}}``."""
    from mrisr.metrics import score_frames

    out = {}
    for name, data in series.items():
        rows = score_frames(data, truth)
        out[name] = {"tissue": [float(r["ssim_tissue"]) for r in rows], "whole": [float(r["ssim_whole"]) for r in rows]}
    return out


class CompareWidget(Container):
    """Side-by-side grid of LR / sinc / SR / ground truth, an error map and an SSIM plot."""

    #: emitted with ``{name: [ssim per frame]}`` when the metrics are ready
    metrics_ready = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.lr = layer_combo(viewer, "LR series", prefer=("lr",), optional=True)
        self.sr = layer_combo(viewer, "SR result", prefer=("sr",))
        self.truth = layer_combo(viewer, "ground truth", prefer=("ground_truth",), optional=True)
        self.grid = CheckBox(text="side by side (grid)", value=True)
        self.inplane = CheckBox(text="in-plane (x, y) view", value=True)
        self.run_button = PushButton(text="Compare")
        self.status = Label(value="")
        self.extend([self.lr, self.sr, self.truth, self.grid, self.inplane, self.run_button, self.status])
        self.run_button.changed.connect(notify_errors(self.run))
        #: SSIM per frame inside the object, per series (``SR``, ``sinc``)
        self.metrics: dict[str, list[float]] = {}
        #: the same over the whole volume (background included)
        self.whole_metrics: dict[str, list[float]] = {}
        self.worker: Any = None
        self._added: list[Any] = []
        self._figure, self._canvas = self._make_plot()

    def _make_plot(self) -> tuple[Any, Any]:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4, 2.6), tight_layout=True)
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(200)
        self.native.layout().addWidget(canvas)
        return figure, canvas

    def _add(self, volume: Volume, name: str, role: str, **kwargs: Any) -> Any:
        data, layer_kwargs, _ = volume_to_layer_data(volume, name, role=role, **kwargs)
        layer = self._viewer.add_image(data, **layer_kwargs)
        self._added.append(layer)
        return layer

    def run(self) -> list[Any]:
        """Add the sinc and error layers, arrange the grid and start the SSIM computation.

        Returns:
            The layers shown side by side, in order.
        """
        from napari.qt.threading import create_worker

        sr_layer = chosen(self.sr, "SR result")
        sr = layer_to_volume(sr_layer)
        for layer in self._added:  # replace what an earlier comparison added
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        self._added = []
        shown = []
        sinc = truth = None
        if self.lr.value is not None:
            lr_layer = self.lr.value
            sinc = sinc_on_grid(layer_to_volume(lr_layer), sr)
            self._check_frames(sinc, sr, lr_layer.name)
            shown += [lr_layer, self._add(sinc, f"{lr_layer.name} sinc", "sinc", colormap="gray",
                                          contrast_limits=sr_layer.contrast_limits)]
        shown.append(sr_layer)
        if self.truth.value is not None:
            truth_layer = self.truth.value
            truth_volume = layer_to_volume(truth_layer)
            self._check_frames(truth_volume, sr, truth_layer.name)
            truth = on_grid(truth_volume, sr)
            error = sr.with_data(np.abs(np.asarray(sr.data, dtype=np.float32) - truth))
            high = float(np.percentile(error.data, 99.5)) or 1.0
            shown += [truth_layer, self._add(error, f"|{sr_layer.name} - {truth_layer.name}|", "error",
                                             colormap="magma", contrast_limits=(0.0, high))]
        self._arrange(shown)
        if truth is not None:
            series = {"SR": np.asarray(sr.data, dtype=np.float32)}
            if sinc is not None:
                series["sinc"] = np.asarray(sinc.data)
            self.status.value = "computing SSIM per frame"
            self.worker = create_worker(tissue_and_whole, series, truth, _start_thread=False, _ignore_errors=True)
            self.worker.returned.connect(self._on_metrics)
            self.worker.errored.connect(self._on_error)
            self.worker.start()
        else:
            self.status.value = "no ground truth: no error map or SSIM"
        return shown

    @staticmethod
    def _check_frames(volume: Volume, sr: Volume, name: str) -> None:
        if volume.n_frames != sr.n_frames:
            raise MrisrInputError(f"layer {name!r} has {volume.n_frames} frame(s), the SR result {sr.n_frames}; "
                                  "choose layers of the same series")

    def _arrange(self, shown: list[Any]) -> None:
        layers = self._viewer.layers
        for layer in layers:
            layer.visible = layer in shown
        # napari's grid skips hidden layers and fills tiles from the bottom of the layer list:
        # stack the compared layers on top, the first one lowest, so tiles read LR, sinc, SR, ...
        for layer in shown:
            layers.move(layers.index(layer), len(layers))
        self._viewer.canvas.grid.enabled = bool(self.grid.value)
        if self.inplane.value:
            show_inplane(self._viewer)
        self._viewer.reset_view()

    def _on_metrics(self, scores: dict[str, dict[str, list[float]]]) -> None:
        metrics = {name: s["tissue"] for name, s in scores.items()}
        self.metrics = metrics
        self.whole_metrics = {name: s["whole"] for name, s in scores.items()}
        self._figure.clear()
        axes = self._figure.add_subplot(111)
        for i, (name, values) in enumerate(metrics.items()):
            axes.plot(range(len(values)), values, marker="o", color=f"C{i}",
                      label=f"{name} tissue (mean {np.mean(values):.3f})")
            whole = self.whole_metrics[name]
            axes.plot(range(len(whole)), whole, ls="--", color=f"C{i}", alpha=0.6,
                      label=f"{name} whole volume ({np.mean(whole):.3f})")
        axes.set_xlabel("frame")
        axes.set_ylabel("SSIM")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
        self._canvas.draw_idle()
        self.status.value = ", ".join(f"{name} SSIM tissue {np.mean(v):.3f} (whole {np.mean(self.whole_metrics[name]):.3f})"
                                      for name, v in metrics.items())
        self.worker = None
        self.metrics_ready.emit(metrics)

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"SSIM computation failed: {type(exc).__name__}: {exc}")
        self.status.value = f"SSIM failed: {exc}"
        self.worker = None
