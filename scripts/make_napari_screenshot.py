"""Make the README's napari screenshot ``docs/napari.png``.

Opens the plugin's sample (the dynamic phantom from the bundled Colin27 slab), runs the
**Reconstruct** widget with its defaults (bundled ``default`` model, ``tracked`` prior) on the CPU,
then **Compare** (grid of LR | sinc | SR | ground truth | error, SSIM per frame), and saves a
screenshot of the whole window. Needs a display; on a headless machine::

    xvfb-run -a .venv/bin/python scripts/make_napari_screenshot.py            # -> docs/napari.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 600_000


def _wait(signal, start) -> list:
    """Call ``start()`` and run the Qt event loop until ``signal`` fires (or a time-out)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got: list = []

    def done(*args):
        got.append(args)
        loop.quit()

    signal.connect(done)
    start()
    if not got:
        QTimer.singleShot(TIMEOUT_MS, loop.quit)
        loop.exec()
    if not got:
        raise RuntimeError(f"no result within {TIMEOUT_MS / 1000:.0f} s")
    return list(got[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "napari.png")
    args = parser.parse_args()

    import napari
    from imageio.v3 import imwrite

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1000)
    _planning, _lr, truth = viewer.open_sample("mrisr", "dynamic_phantom")
    _, widget = viewer.window.add_plugin_dock_widget("mrisr", "Reconstruct")
    widget.device.value = "cpu"
    status = _wait(widget.run_finished, widget.run_button.native.click)[0]
    if status != "done":
        raise SystemExit(f"reconstruction ended with {status!r}")
    _, compare = viewer.window.add_plugin_dock_widget("mrisr", "Compare")
    _wait(compare.metrics_ready, compare.run)
    # slice 16 of 32 on the slice slider (layers are (T, Z, Y, X): the acquired plane is shown)
    viewer.dims.set_point(viewer.dims.ndim - 3, truth.data_to_world((0, 16, 0, 0))[1])
    from qtpy.QtWidgets import QApplication

    try:  # no notification toast over the canvas
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.hide()
    except ImportError:
        pass
    for _ in range(20):
        QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    imwrite(args.output, shot)
    print(f"{args.output}: {shot.shape[1]}x{shot.shape[0]} (prior mode {widget.prior_mode.value}, model "
          f"{widget.model.value})")
    viewer.close()


if __name__ == "__main__":
    main()
