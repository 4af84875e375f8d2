"""mrisr: prior-guided super-resolution of dynamic MRI."""

__version__ = "0.1.0"
