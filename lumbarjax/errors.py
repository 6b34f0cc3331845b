"""Errors raised for bad input. Every message names the file, patient or column at fault."""


class LumbarjaxError(ValueError):
    """Base class: bad input or configuration that the user can fix."""


class DicomError(LumbarjaxError):
    """A DICOM file or series that cannot be read or does not make sense."""


class NiftiError(LumbarjaxError):
    """A NIfTI file that cannot be read or does not make sense."""


class ClinicalError(LumbarjaxError):
    """A clinical table that cannot be read or fails validation."""


class CohortError(LumbarjaxError):
    """A cohort (manifest + clinical table) that cannot be joined."""


class ConfigError(LumbarjaxError):
    """A configuration value that is missing or out of range."""


class NonFiniteError(LumbarjaxError):
    """Training produced a NaN/Inf loss or gradient (names the step, the batch's patients and
    the last good checkpoint)."""
