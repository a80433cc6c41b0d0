"""Model-agnostic probes of a loss landscape. They work on any ``nn.Module``, never change it,
and import nothing from the study.

Every probe takes the model, a loss returning the batch mean, a fixed sample set
``(inputs, targets)`` and, where it draws anything at random, an explicit ``torch.Generator``.
"""

from .connectivity import linear_path_losses, path_barrier
from .curves import CurveFit, bezier_path_losses, bezier_point, midpoint_control, train_bezier_control
from .edge_of_stability import EdgeOfStabilityRun, full_batch_gd_sharpness, mse_loss
from .directions import (eigenvector_direction, filter_normalised_direction, layer_normalised_direction,
                         random_direction)
from .flatness import isotropic_trace_prediction, perturbation_loss_changes
from .hessian import HessianOperator, hvp
from .hvp_paths import HessianUnavailableError
from .lanczos import lanczos_extremes, lanczos_top_eigs, operator_top_eigs
from .permutation import (PermutationGroup, PermutationSpec, PermutedAxis, WeightMatching, aligned_params,
                          apply_permutation, check_spec, weight_matching)
from .power import power_iteration_top_eig
from .sharpness import AdaptiveSharpness, MinibatchSharpness, adaptive_sharpness, minibatch_top_eigs, training_batches
from .slices import centred_grid, linear_slice_losses, linear_surface_losses, quadratic_fit_curvature
from .spectrum import hutchinson_trace, hutchpp_lanczos_trace, hutchpp_trace, slq_spectral_density
from .stability import (PreconditionedOperator, adam_preconditioner, adam_preconditioner_of, adam_stability_threshold,
                        gd_stability_threshold, heavy_ball_stability_threshold, preconditioned_top_eig,
                        stability_threshold)

__all__ = [
    "CurveFit", "HessianOperator", "HessianUnavailableError", "PermutationGroup", "PermutationSpec", "PermutedAxis",
    "WeightMatching", "aligned_params", "apply_permutation", "bezier_path_losses", "bezier_point", "centred_grid",
    "check_spec", "eigenvector_direction", "filter_normalised_direction", "hutchinson_trace",
    "hutchpp_lanczos_trace", "hutchpp_trace", "hvp", "isotropic_trace_prediction", "lanczos_extremes", "lanczos_top_eigs", "layer_normalised_direction",
    "linear_path_losses", "linear_slice_losses", "linear_surface_losses", "midpoint_control", "path_barrier",
    "perturbation_loss_changes", "power_iteration_top_eig", "quadratic_fit_curvature", "random_direction",
    "slq_spectral_density", "train_bezier_control", "weight_matching",
    "AdaptiveSharpness", "EdgeOfStabilityRun", "MinibatchSharpness", "PreconditionedOperator", "adam_preconditioner",
    "adam_preconditioner_of", "adam_stability_threshold", "adaptive_sharpness", "full_batch_gd_sharpness",
    "gd_stability_threshold", "heavy_ball_stability_threshold", "minibatch_top_eigs", "mse_loss", "operator_top_eigs",
    "preconditioned_top_eig", "stability_threshold", "training_batches",
]
