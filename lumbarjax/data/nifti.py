"""Read and write NIfTI volumes in the DICOM-style ``(D, H, W)`` / LPS convention.

NIfTI stores ``data[i, j, k]`` with ``affine_ras @ [i, j, k, 1] = [x, y, z, 1]`` in RAS mm.
lumbarjax volumes are ``array[d, h, w]`` with ``affine @ [d, h, w, 1]`` in LPS mm
(docs/CONTRACTS.md). On read: ``array = data.transpose(2, 1, 0)`` (d = k, h = j, w = i) and

    affine = FLIP @ affine_ras @ PERM

with ``FLIP = diag(-1, -1, 1, 1)`` (RAS -> LPS) and ``PERM`` mapping ``[d, h, w, 1]`` to
``[i, j, k, 1]``. ``write_nifti`` applies the inverse, so ``read_nifti(write_nifti(a, A))``
returns ``a`` bit for bit (float32) and ``A`` to float32 precision (the sform is float32 on disk).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from lumbarjax.data import sanity
from lumbarjax.data.dicom import Volume
from lumbarjax.errors import NiftiError

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
PERM = np.array(  # [d, h, w, 1] -> [i, j, k, 1] (its own inverse)
    [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def lps_affine_from_nifti(affine_ras: np.ndarray) -> np.ndarray:
    """(4, 4) NIfTI RAS affine over [i, j, k] -> (4, 4) LPS affine over [d, h, w]."""
    return FLIP @ np.asarray(affine_ras, dtype=np.float64) @ PERM


def nifti_affine_from_lps(affine_lps: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lps_affine_from_nifti`."""
    return FLIP @ np.asarray(affine_lps, dtype=np.float64) @ PERM


def read_nifti(path) -> Volume:
    """Read a 3-D NIfTI-1/2 file (.nii / .nii.gz) into a Volume (D, H, W) float32, LPS affine.

    Scaling (scl_slope / scl_inter) is applied. A 4-D image is accepted only when its 4th
    dimension is 1. NiftiError naming the file for anything else that is wrong, including
    NaN / infinite voxels (``err.reason`` = "non-finite image"). Spacing is checked by the
    caller, who knows whether the file is an MRI or an X-ray (``lumbarjax.data.sanity``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NiftiError(f"{path}: file not found")
    try:
        img = nib.load(path)
    except Exception as e:
        raise NiftiError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1/2 images and .hdr/.img pairs
        raise NiftiError(f"{path}: {type(img).__name__} is not a NIfTI volume")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        squeeze = True
    elif len(shape) == 3:
        squeeze = False
    else:
        raise NiftiError(
            f"{path}: {len(shape)}-D image of shape {tuple(shape)}; expected a 3-D volume "
            "(or 4-D with a 4th dimension of 1)"
        )
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:
        raise NiftiError(f"{path}: cannot read the voxel data ({type(e).__name__}: {e})") from e
    if squeeze:
        data = data[..., 0]
    sanity.check_finite(data, path, NiftiError)
    affine_ras = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine_ras)) or abs(np.linalg.det(affine_ras[:3, :3])) < 1e-12:
        raise NiftiError(f"{path}: singular or non-finite affine {affine_ras.tolist()}")
    affine = lps_affine_from_nifti(affine_ras)
    descrip = img.header.get("descrip")
    descrip = descrip.item().decode("latin-1", "replace").strip("\x00 ") if descrip is not None \
        else ""
    return Volume(
        array=np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32),
        spacing=np.linalg.norm(affine[:3, :3], axis=0),
        affine=affine,
        paths=[path],
        patient_id="",
        series_description=descrip,
    )


def write_nifti(array, affine, path, *, description: str = "") -> str:
    """Write ``array`` (D, H, W) with LPS ``affine`` (4, 4) as NIfTI-1 (.nii or .nii.gz).

    Data are stored as float32 (no scaling); sform and qform are set (code 1, scanner).
    Returns the path written.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3:
        raise NiftiError(f"{path}: write_nifti needs a (D, H, W) array, got shape {array.shape}")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise NiftiError(f"{path}: write_nifti needs a finite (4, 4) affine")
    affine_ras = nifti_affine_from_lps(affine)
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32),
                          affine_ras)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)  # best rigid approximation; readers use the sform
    img.header.set_xyzt_units("mm")
    if description:
        img.header["descrip"] = description.encode("latin-1", "replace")[:79]
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        nib.save(img, path)
    except Exception as e:
        raise NiftiError(f"{path}: cannot write NIfTI ({type(e).__name__}: {e})") from e
    return path


__all__ = ["read_nifti", "write_nifti", "lps_affine_from_nifti", "nifti_affine_from_lps"]
