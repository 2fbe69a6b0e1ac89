"""Certified sensitivities: Weyl's inequality turned into per-feature bounds.

For M(x) = diag(mu) + sum_i x_i A_i, |lambda_k(M(x + delta)) - lambda_k(M(x))|
<= ||sum_i delta_i A_i||_2 <= sum_i |delta_i| ||A_i||_2. The model sees
standardised features (x_i - mean_i) / scale_i and outputs standardised
targets (regression: y = mean + scale * output), so in the user's units the
bound per unit of feature i is ||A_i||_2 * output_scale / scale_i.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted


def spectral_norms(matrices: np.ndarray) -> np.ndarray:
    """||A||_2 of each symmetric matrix in a (..., n, n) stack."""
    return np.abs(np.linalg.eigvalsh(matrices)).max(axis=-1)


def to_user_units(norms, output_scale: float, x_scale):
    """Bounds per unit of each feature, from ||A_i||_2 on standardised data (numpy or torch)."""
    return norms * output_scale / x_scale


class CertifiedSensitivityMixin:
    """feature_sensitivities_, sensitivity_bound and feature_importances_ for a
    fitted spectral estimator (needs ``feature_matrices_``, ``x_scale_`` and
    ``_output_scale()``)."""

    def _feature_matrix_norms(self) -> np.ndarray:
        """||A_i||_2 of the fitted feature matrices (standardised units), shape (..., n_features)."""
        check_is_fitted(self, "_module_state_")
        return spectral_norms(self.feature_matrices_)

    @property
    def feature_sensitivities_(self) -> np.ndarray:
        """Certified bound on |d prediction / d x_i| in the user's units.

        By Weyl's inequality the model output moves by at most
        sum_i |delta_i| * ||A_i||_2 (standardised units); this converts to the
        original feature and target units: ||A_i||_2 * output_scale / x_scale_i.
        Shape (n_features,), or (n_classes, n_features) for a multiclass
        classifier (bounds on each class's logit; binary: on the logit).
        """
        return to_user_units(self._feature_matrix_norms(), self._output_scale(), self.x_scale_)

    def sensitivity_bound(self, delta) -> np.ndarray:
        """Largest possible change of the prediction when the features move by ``delta``.

        The bound is on the prediction for regression and on the logit(s) for
        classification; it holds for any x, also with clip_features (clipping
        never increases |delta_i|).

        Parameters
        ----------
        delta : array-like of shape (n_features,) or (n_rows, n_features)
            Moves of the features, in the features' units.

        Returns
        -------
        bound : ndarray of shape () or (n_rows,)
            With a trailing n_classes axis for a multiclass classifier.
        """
        sensitivities = self.feature_sensitivities_
        delta = np.asarray(delta, dtype=np.float64)
        if delta.ndim not in (1, 2) or delta.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"delta must have shape (n_features,) or (n_rows, n_features) with n_features="
                f"{self.n_features_in_}; got {delta.shape}."
            )
        return np.abs(delta) @ sensitivities.T

    @property
    def feature_importances_(self) -> np.ndarray:
        """Share of the certified sensitivity per feature for a one-standard-deviation move.

        ||A_i||_2 on standardised features, normalised to sum to 1 (summed over
        classes for multiclass). Unlike permutation importance, this is a
        property of the model alone (no data, no randomness) and a worst case:
        a feature whose matrix is large but rarely aligned with the k-th
        eigenvector ranks high here and lower under permutation.
        """
        per_std = self._feature_matrix_norms().reshape(-1, self.n_features_in_).sum(axis=0)
        total = per_std.sum()
        return per_std / total if total > 0 else np.full(self.n_features_in_, 1.0 / self.n_features_in_)
