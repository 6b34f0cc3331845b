"""lumbarjax launcher.

    python launch.py --config=configs/demo.py --workdir=runs/demo
    python launch.py --config=configs/outcome.py --config.data.cohort_dir=/data/cohort \
        --workdir=runs/outcome --config.outcome.train.num_steps=800

Modes (``--mode``, default ``config.mode``): ``index`` writes the editable manifest only;
``crossval`` (and ``demo``) runs the whole job: index, cohort join, preprocessing, k-fold
cross-validation of every task in ``config.tasks``, baselines, heat maps and the HTML report;
``report`` re-draws report.html / metrics.json of a finished run from its saved artefacts;
``predict --patient_dir=FOLDER`` predicts one new patient with the run's fold models;
``evaluate --cohort_dir=FOLDER`` is external validation: the run's outcome fold ensemble (mean
of the k fold models) predicts every patient of another labelled cohort, indexed and
preprocessed as the run's (its manifest and cache go to the output folder), and
``metrics.json`` + ``report.html`` there give per head AUC / MAE with bootstrap CIs,
calibration slope and intercept with a plot, and a decision curve (lumbarjax/jobs/external.py).

    python launch.py --config=configs/demo.py --workdir=runs/demo --mode=predict \
        --patient_dir=/data/new/patient_0421 [--clinical=/data/new/clinical.csv]
    python launch.py --config=configs/demo.py --workdir=runs/demo --mode=evaluate \
        --cohort_dir=/data/hospital_b [--out_dir=runs/demo/external/hospital_b]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from lumbarjax.errors import LumbarjaxError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (get_config())",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "output folder (manifest, cache, checkpoints, report)")
flags.DEFINE_enum("mode", None, ["index", "crossval", "demo", "report", "predict", "evaluate"],
                  "stage(s) to run (default: config.mode)")
flags.DEFINE_string("patient_dir", None, "--mode=predict: one new patient's DICOM folder "
                    "(optionally with its one-row clinical.csv)")
flags.DEFINE_string("clinical", None, "--mode=predict: clinical table holding the patient's row")
flags.DEFINE_string("cohort_dir", None, "--mode=evaluate: another labelled cohort folder "
                    "(clinical.csv/.xlsx + DICOM below it) for external validation")
flags.DEFINE_string("out_dir", None, "--mode=predict: output folder (default "
                    "<workdir>/predictions/<patient_id>); --mode=evaluate: default "
                    "<workdir>/external/<cohort folder name>")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host; "
                  "SLURM / Open MPI / TPU detected, else the three flags below)")
flags.DEFINE_string("coordinator_address", None, "--distributed: host:port of process 0 "
                    "(default: detected, or $JAX_COORDINATOR_ADDRESS)")
flags.DEFINE_integer("num_processes", None, "--distributed: number of processes (default: detected)")
flags.DEFINE_integer("process_id", None, "--distributed: this process, 0..num_processes-1 "
                     "(default: detected)")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
    """Drops INFO chatter of orbax (tens of lines per checkpoint) from the absl log."""

    def filter(self, record):
        return record.levelno >= 30 or "orbax" not in record.pathname


def main(argv):
    del argv
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from lumbarjax.train.mesh import maybe_initialize_distributed
    maybe_initialize_distributed(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                                 num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    from lumbarjax import compile_cache
    from lumbarjax.jobs import predict, report, workflow
    config = FLAGS.config
    cache = compile_cache.enable(config.compilation_cache)
    logging.info("compilation cache: %s", cache or "off")
    mode = FLAGS.mode or config.mode
    logging.info("config:\n%s", config)
    try:
        if mode == "report":
            html, metrics = report.report_from_workdir(config, FLAGS.workdir)
            print(f"report: {html}\nmetrics: {metrics}")
            return
        if mode == "predict":
            if not FLAGS.patient_dir:
                raise app.UsageError("--mode=predict needs --patient_dir=FOLDER")
            res = predict.predict_patient(config, FLAGS.workdir, FLAGS.patient_dir,
                                          out_dir=FLAGS.out_dir, clinical=FLAGS.clinical)
            print(f"prediction: {res['html']}\njson: {res['json']}")
            return
        if mode == "evaluate":
            if not FLAGS.cohort_dir:
                raise app.UsageError("--mode=evaluate needs --cohort_dir=FOLDER (another labelled cohort)")
            from lumbarjax.jobs import external
            res = external.evaluate_cohort(config, FLAGS.workdir, FLAGS.cohort_dir, out_dir=FLAGS.out_dir)
            print(f"external validation ({res['n_patients']} patients): {res['html']}\n"
                  f"metrics: {res['metrics']}")
            return
        results = workflow.run(config, FLAGS.workdir, "crossval" if mode == "demo" else mode)
    except LumbarjaxError as e:  # bad input or config: the message says what and where
        raise app.UsageError(f"{type(e).__name__}: {e}") from None
    if results.report:
        print(f"report: {results.report}\nmetrics: {results.metrics}")


if __name__ == "__main__":
    app.run(main)
