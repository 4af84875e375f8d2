"""Simulate undersampling: the thin face of :func:`mrisr.kspace.simulate_volume`."""

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox

from mrisr.kspace.masks import MASKS
from mrisr.napari._geometry import layer_to_volume, volume_to_layer_data
from mrisr.napari._layers import chosen, layer_combo, notify_errors


class SimulateWidget(Container):
    """Undersample an image layer in k-space and add the LR result and its k-space mask.

    ``center`` without zero-filling gives the true LR matrix on its coarser grid (placed in
    world space); every other case gives the zero-filled image on the input grid. The mask
    layer is the in-plane k-space ``(ky, kx)`` (rows, columns) (DC at the centre), not an image in world space.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.image = layer_combo(viewer, "image", prefer=("ground_truth", "planning"))
        self.mode = ComboBox(label="mask", choices=list(MASKS), value="center")
        self.keep = FloatSpinBox(label="keep %", value=6.25, min=0.1, max=100.0, step=0.25)
        self.zero_fill = CheckBox(text="zero-fill to the input matrix (sinc)", value=False)
        self.noise_snr = FloatSpinBox(label="noise SNR (0: none)", value=0.0, min=0.0, max=1000.0, step=5.0)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.run_button = PushButton(text="Simulate")
        self.status = Label(value="")
        self.extend([self.image, self.mode, self.keep, self.zero_fill, self.noise_snr, self.seed, self.run_button,
                     self.status])
        self.run_button.changed.connect(notify_errors(self.run))

    def run(self) -> list:
        """Simulate and add the layers; returns ``[lr_layer, mask_layer]``."""
        from mrisr.kspace import simulate_volume

        layer = chosen(self.image, "image")
        volume = layer_to_volume(layer)
        keep, mode = float(self.keep.value), str(self.mode.value)
        snr = float(self.noise_snr.value) or None
        result, info = simulate_volume(volume, keep, mode=mode, zero_fill=bool(self.zero_fill.value),
                                       noise_snr=snr, seed=int(self.seed.value))
        grid = "LR grid" if result.spatial_shape != volume.spatial_shape else "zero-filled"
        name = f"{layer.name} {mode} {info.keep_actual:.3g}% ({grid})"
        data, kwargs, _ = volume_to_layer_data(result, name, role="lr", colormap="gray")
        kwargs["metadata"]["mrisr"].update(mode=mode, keep_requested=keep, keep_actual=info.keep_actual)
        lr_layer = self._viewer.add_image(data, **kwargs)
        mask = np.asarray(info.mask, dtype=np.uint8) if info.mask is not None else np.ones(info.lr_inplane, np.uint8)
        # rows ky, columns kx: the same plane as the image layers
        mask_layer = self._viewer.add_image(
            mask.T, name=f"{name} k-space mask (ky, kx)", colormap="gray", contrast_limits=(0, 1),
            metadata={"mrisr": {"role": "kspace_mask", "mode": mode, "keep_actual": info.keep_actual}},
        )
        self.status.value = (f"kept {info.keep_actual:.3g} % of k-space; LR in-plane matrix "
                             f"{info.lr_inplane[0]}x{info.lr_inplane[1]}")
        return [lr_layer, mask_layer]
