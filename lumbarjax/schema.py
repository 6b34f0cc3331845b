"""Names shared across lumbarjax: spinal levels, outcome heads, image roles and modalities.

One place for the vocabularies that the data readers, models, tasks and reports all use, so
that a level or head is spelled the same everywhere (MONAI keeps its shared names in an enums
module the same way).
"""

# Lumbar disc levels, cranial to caudal, as written in column names (``xray_grade_L4L5``).
LEVELS = ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")

# Outcome-model heads: binary (probabilities) and regression (post-operative VAS, 0-100 mm).
BINARY_HEADS = ("zcq_success", "back_pain_improved50", "leg_pain_improved50")
REGRESSION_HEADS = ("back_pain_post", "leg_pain_post")
# The scale of the regression heads (VAS, mm): every model's prediction lies in it.
VAS_RANGE = (0.0, 100.0)

# Manifest roles: the lateral X-ray and the sagittal T2 MRI series of a patient.
ROLES = ("xray", "mri_t2_sag")
# Manifest role -> column prefix in the cohort records (``xray_file``, ``mri_file``, ...).
ROLE_PREFIX = {"xray": "xray", "mri_t2_sag": "mri"}

# DICOM modalities accepted as a radiograph.
XRAY_MODALITIES = ("CR", "DX")

# The three sources an outcome model can use.
SOURCES = ("clinical", "xray", "mri")

# The ablation row that feeds the generator's true latents to the linear family: the ceiling a
# perfect image stage 1 would give (synthetic cohorts only).
PERFECT_STAGE1 = "clinical + true latents"
