"""Read MetaImage (``.mha`` / ``.mhd``) volumes with SimpleITK into the Volume convention.

SimpleITK (ITK) keeps physical space in LPS mm, the same frame as DICOM: the point of voxel
index ``(i, j, k)`` is ``origin + direction @ (spacing * (i, j, k))`` and
``GetArrayFromImage`` returns the array indexed ``[k, j, i]``. :func:`read_metaimage` builds the
(4, 4) affine of that array and then reorders its axes to the project's sagittal convention
(docs/CONTRACTS.md): ``d`` the axis closest to left-right (x), ``h`` closest to
superior-inferior (z) and running inferior, ``w`` closest to anterior-posterior (y) and running
posterior. Axis permutations and flips change the array and its affine together, so every
voxel keeps its patient coordinate exactly (the tests check against SimpleITK's own
``TransformIndexToPhysicalPoint``).
"""

from __future__ import annotations

import os

import numpy as np

from lumbarjax.data.dicom import Volume
from lumbarjax.errors import NiftiError

METAIMAGE_SUFFIXES = (".mha", ".mhd")


def sitk_affine(image) -> np.ndarray:
    """(4, 4) affine of ``GetArrayFromImage(image)``: ``[k, j, i, 1]`` -> LPS mm."""
    n = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(n, n)
    spacing = np.asarray(image.GetSpacing(), float)
    cols = direction * spacing[None, :]          # column a = index axis a (i, j, k)
    affine = np.eye(4)
    affine[:3, :3] = cols[:, ::-1]               # array axes are (k, j, i)
    affine[:3, 3] = np.asarray(image.GetOrigin(), float)
    return affine


def reorient_sagittal(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip ``array`` (3-D) and ``affine`` together to d ~ x, h ~ -z, w ~ +y."""
    cols = affine[:3, :3]
    unit = np.abs(cols / np.linalg.norm(cols, axis=0, keepdims=True))
    # choose the array axis for each output axis (x, z, y), greedily by alignment
    order, free = [], [0, 1, 2]
    for world_axis in (0, 2, 1):
        best = max(free, key=lambda a: unit[world_axis, a])
        order.append(best)
        free.remove(best)
    array = np.transpose(array, order)
    affine = affine.copy()
    affine[:3, :3] = cols[:, order]
    for out_axis, world_axis, sign in ((1, 2, -1.0), (2, 1, 1.0)):
        if np.sign(affine[world_axis, out_axis]) != sign:
            n = array.shape[out_axis]
            affine[:3, 3] = affine[:3, 3] + (n - 1) * affine[:3, out_axis]
            affine[:3, out_axis] = -affine[:3, out_axis]
            array = np.flip(array, axis=out_axis)
    return np.ascontiguousarray(array), affine


def read_metaimage(path, *, labels: bool = False, reorient: bool = True) -> Volume:
    """A ``.mha``/``.mhd`` volume as a :class:`Volume` (array (D, H, W), affine to LPS mm).

    ``labels=True`` keeps integer values (a segmentation mask: int16) instead of float32.
    ``reorient=False`` keeps SimpleITK's array order (``[k, j, i]``). NiftiError (the
    project's error for non-DICOM image files) names the file when it cannot be read or is not
    3-D.
    """
    import SimpleITK as sitk

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NiftiError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise NiftiError(f"{path}: unreadable MetaImage ({first})") from e
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise NiftiError(f"{path}: expected a 3-D single-channel image, got dimension "
                         f"{image.GetDimension()} with {image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    array = array.astype(np.int16 if labels else np.float32)
    affine = sitk_affine(image)
    if reorient:
        array, affine = reorient_sagittal(array, affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return Volume(array=array, spacing=spacing, affine=affine, paths=[path])


__all__ = ["METAIMAGE_SUFFIXES", "read_metaimage", "reorient_sagittal", "sitk_affine"]
