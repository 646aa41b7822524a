"""Flax networks and their training: the U-Net, 3Snet, DPS and self-supervised denoising.

Framework: Flax Linen (parameters are plain pytrees and ``apply`` is a pure
function, so everything composes with ``jit``, ``vmap``, ``grad`` and sharding).
"""

from jaxsr.nn.data import augment_d4, random_patches
from jaxsr.nn.dps import (
    DPS_BACKGROUNDS,
    DPS_CONFIG,
    DPS_TRAIN,
    DPSPrepared,
    DPSResult,
    dps_apply,
    dps_background,
    dps_loss,
    dps_prepare,
    dps_psf,
    dps_resample_factor,
    dps_super_resolve,
    from_canonical_grid,
    to_canonical_grid,
    train_dps,
)
from jaxsr.nn.model import (
    MODEL_KINDS,
    NORMALIZATIONS,
    DenoiserModel,
    denoise,
    load_model,
    pretrained_path,
    save_model,
)
from jaxsr.nn.predict import (
    Normalization,
    denormalize,
    normalize_meanstd,
    normalize_offset_max,
    normalize_percentile,
    predict_tiled,
)
from jaxsr.nn.self_supervised import (
    SELF_SUPERVISED_TRAIN,
    SELF_SUPERVISED_UNET,
    BlindSpotMask,
    blind_spot_corrupt,
    blind_spot_mask,
    make_n2v_loss,
    masked_mse,
    train_self_supervised,
)
from jaxsr.nn.three_snet import (
    DEFAULT_KS,
    LAMBDAS,
    ThreeSNetData,
    lambda_sweep,
    three_snet_data,
    three_snet_loss,
    train_3snet,
)
from jaxsr.nn.train import (
    CHECKPOINT_FILE,
    SCHEDULES,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    fit,
    load_train_state,
    make_optimizer,
    resolve_configs,
)
from jaxsr.nn.unet import UNet, UNetConfig, count_params, unet_apply, unet_init

__all__ = [
    "UNet", "UNetConfig", "count_params", "unet_apply", "unet_init",
    "augment_d4", "random_patches",
    "CHECKPOINT_FILE", "SCHEDULES", "TrainConfig", "TrainingDiverged", "TrainResult", "fit",
    "load_train_state", "make_optimizer", "resolve_configs",
    "MODEL_KINDS", "NORMALIZATIONS", "DenoiserModel", "denoise", "load_model", "pretrained_path", "save_model",
    "DPS_BACKGROUNDS", "DPS_CONFIG", "DPS_TRAIN", "DPSPrepared", "DPSResult", "dps_apply", "dps_background",
    "dps_loss", "dps_prepare", "dps_psf", "dps_resample_factor", "dps_super_resolve", "from_canonical_grid",
    "to_canonical_grid", "train_dps",
    "Normalization", "denormalize", "normalize_meanstd", "normalize_offset_max", "normalize_percentile",
    "predict_tiled",
    "SELF_SUPERVISED_TRAIN", "SELF_SUPERVISED_UNET", "BlindSpotMask", "blind_spot_corrupt", "blind_spot_mask",
    "make_n2v_loss", "masked_mse", "train_self_supervised",
    "DEFAULT_KS", "LAMBDAS", "ThreeSNetData", "lambda_sweep", "three_snet_data", "three_snet_loss", "train_3snet",
]
