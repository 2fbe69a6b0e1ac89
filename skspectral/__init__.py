"""skspectral: eigenvalue models as scikit-learn estimators, with a fast
differentiable batched k-th eigenvalue on CPU and CUDA."""

from .classifier import SpectralClassifier
from .eig import kth_eigvalsh, resolve_backend
from .model import SpectralModel
from .regressor import SpectralRegressor

__version__ = "0.6.0"
__all__ = ["SpectralClassifier", "SpectralModel", "SpectralRegressor", "kth_eigvalsh", "resolve_backend", "__version__"]
