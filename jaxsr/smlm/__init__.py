"""Single-molecule localization microscopy: simulation, detection, MLE fitting at the Cramér-Rao bound.

Used qualified (``jaxsr.smlm.localize``), like :mod:`jaxsr.nn`.

- :mod:`jaxsr.smlm.simulate`: blinking emitters -> PSF -> background -> camera, with ground truth.
- :mod:`jaxsr.smlm.detect`: difference-of-Gaussians candidates and ROI extraction.
- :mod:`jaxsr.smlm.fit`: Poisson (+ sCMOS) maximum-likelihood spot fits and their CRLB.
- :mod:`jaxsr.smlm.localize`: the pipeline from raw frames to a localization table.
- :mod:`jaxsr.smlm.io`: ThunderSTORM CSV and Picasso HDF5 (+ YAML) tables.
- :mod:`jaxsr.smlm.render`: histogram and Gaussian rendering, FRC of two halves.
- :mod:`jaxsr.smlm.drift`: lateral and axial drift correction by redundant cross-correlation (RCC).
- :mod:`jaxsr.smlm.evaluate`: SMLM Challenge matching and scores (Jaccard, RMSE, efficiency).
- :mod:`jaxsr.smlm.net`: a DECODE-style localization network (Flax), trained on the simulator.
- :mod:`jaxsr.smlm.generative`: a physics-informed generative model learned from unlabeled frames,
  which renders realistic labelled training windows for the network.
"""

from jaxsr.smlm.detect import Candidates, detect_spots, extract_rois
from jaxsr.smlm.drift import DriftResult, correct_drift, estimate_drift, pair_shift
from jaxsr.smlm.evaluate import ASSIGNMENTS, MatchResult, efficiency, match_localizations, precision_recall_curve
from jaxsr.smlm.generative import (
    GenerativeModel,
    Microscope,
    ParticlePriors,
    calibrate_density,
    fit_generative,
    fit_priors,
    generative_sampler,
    poisson_gaussian_nll,
    pupil_psf_grid,
    render_particles,
)
from jaxsr.smlm.fit import SPOT_PARAMETERS, SpotFit, fit_spots, gaussian_spot, spot_crlb, spot_fisher
from jaxsr.smlm.io import (
    read_localizations,
    read_picasso_hdf5,
    read_thunderstorm_csv,
    write_localizations,
    write_picasso_hdf5,
    write_thunderstorm_csv,
)
from jaxsr.smlm.localize import LOCALIZATION_COLUMNS, Localizations, camera_counts, localize
from jaxsr.smlm.net import (
    LOCNET_CHANNELS,
    LocNetBatch,
    LocNetModel,
    LocNetSimulation,
    load_locnet,
    localize_net,
    locnet_detect,
    locnet_init,
    locnet_loss,
    locnet_outputs,
    locnet_simulate,
    pretrained_locnet_path,
    save_locnet,
    train_locnet,
)
from jaxsr.smlm.render import frc_localizations, render_gaussian, render_histogram
from jaxsr.smlm.simulate import (
    DEFAULT_PUPIL,
    EMITTER_STRUCTURES,
    SMLM_PSFS,
    SMLMMovie,
    blink,
    emitter_positions,
    render_emitters,
    simulate_smlm,
)

__all__ = [
    "Candidates", "detect_spots", "extract_rois",
    "DriftResult", "correct_drift", "estimate_drift", "pair_shift",
    "ASSIGNMENTS", "MatchResult", "efficiency", "match_localizations", "precision_recall_curve",
    "SPOT_PARAMETERS", "SpotFit", "fit_spots", "gaussian_spot", "spot_crlb", "spot_fisher",
    "LOCALIZATION_COLUMNS", "Localizations", "camera_counts", "localize",
    "DEFAULT_PUPIL", "EMITTER_STRUCTURES", "SMLM_PSFS", "SMLMMovie", "blink", "emitter_positions", "render_emitters",
    "simulate_smlm",
    "read_localizations", "read_picasso_hdf5", "read_thunderstorm_csv", "write_localizations",
    "write_picasso_hdf5", "write_thunderstorm_csv",
    "frc_localizations", "render_gaussian", "render_histogram",
    "LOCNET_CHANNELS", "LocNetBatch", "LocNetModel", "LocNetSimulation", "load_locnet", "localize_net",
    "locnet_detect", "locnet_init", "locnet_loss", "locnet_outputs", "locnet_simulate", "pretrained_locnet_path",
    "save_locnet", "train_locnet",
    "GenerativeModel", "Microscope", "ParticlePriors", "calibrate_density", "fit_generative", "fit_priors",
    "generative_sampler", "poisson_gaussian_nll", "pupil_psf_grid", "render_particles",
]
