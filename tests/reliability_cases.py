"""Bad inputs and faults, what the user gets, and what is kept: the one list that the reliability tests check
and that ``scripts/reliability_table.py`` renders as the book's table (``book/reliability_table.md``).

Each test that covers a case reads its message from here and asserts it, so the table cannot drift from what
the code does. In a message, ``{name}`` is filled in by the test (a temporary path, a configuration hash) and
shown as ``<name>`` in the book; a message ending in ``…`` is asserted as a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Case", "CASES", "case"]


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    #: The bad input or the fault, as a user meets it.
    trigger: str
    #: What the user gets: the exact message (or, in parentheses, what happens when there is no message).
    message: str
    #: What is kept.
    kept: str
    #: The test that checks it: ``path::function``.
    test: str
    #: The finding of the reliability review it answers (1-11), if any.
    finding: int | None = None
    #: For ``posenc`` command lines checked in-process: the arguments and the exit status.
    argv: tuple[str, ...] = ()
    status: int | None = None

    def expect(self, **fields: str) -> str:
        """The message with its fields filled in."""
        return self.message.format(**fields)

    def matches(self, text: str, **fields: str) -> bool:
        want = self.expect(**fields)
        return text.startswith(want[:-1]) if want.endswith("…") else text == want


RUN_T = "tests/commands/test_run_faults.py"
EXP_T = "tests/experiment/test_faults.py"
NOTHING = "nothing was written"

_CASES = [
    # ------------------------------------------------------------------ posenc run: arguments
    Case("run-unknown-id", "posenc run", "an id that is not registered",
         "posenc run: unknown positional encoding id 'no_such_pe'", NOTHING, f"{RUN_T}::test_bad_arguments",
         argv=("run", "no_such_pe"), status=2),
    Case("run-unknown-field", "posenc run", "`--set stepz=3` (a preset field that does not exist)",
         "posenc run: unknown preset field(s) stepz; known: batch_size, d_model, …", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--set", "stepz=3"), status=2),
    Case("run-bad-field-value", "posenc run", "`--set lr=nan`",
         "posenc run: preset 'smoke': 'lr' must be a finite number > 0, got 'nan'", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--set", "lr=nan"), status=2),
    Case("run-eval-bytes", "posenc run", "`--set eval_bytes=1000` (lengths would score different bytes)",
         "posenc run: preset 'smoke': 'eval_bytes' (1000) must be a multiple of the longest evaluation length (128) "
         "so that every length scores the same bytes", NOTHING, f"{RUN_T}::test_bad_arguments",
         argv=("run", "rope", "--set", "eval_bytes=1000"), status=2),
    Case("run-negative-seed", "posenc run", "`--seeds -1`",
         "posenc run: --seeds expects distinct comma-separated ints >= 0, got '-1'", NOTHING,
         f"{RUN_T}::test_bad_arguments", finding=8, argv=("run", "rope", "--seeds", "-1"), status=2),
    Case("run-seed-text", "posenc run", "`--seeds a`",
         "posenc run: --seeds expects comma-separated ints >= 0, got 'a'", NOTHING,
         f"{RUN_T}::test_bad_arguments", finding=8, argv=("run", "rope", "--seeds", "a"), status=2),
    Case("run-duplicate-seeds", "posenc run", "`--seeds 0,0`",
         "posenc run: --seeds expects distinct comma-separated ints >= 0, got '0,0'", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--seeds", "0,0"), status=2),
    Case("run-hp-syntax", "posenc run", "`--hp scale` (no value)", "posenc run: --hp expects NAME=VALUE, got 'scale'",
         NOTHING, f"{RUN_T}::test_bad_arguments", argv=("run", "yarn", "--hp", "scale"), status=2),
    Case("run-hp-unknown", "posenc run", "`posenc run rope --hp nosuch=1`",
         "posenc run: rope: unknown hyperparameter(s) nosuch (allowed: base)", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--hp", "nosuch=1"), status=2),
    Case("run-hp-value", "posenc run", "`posenc run yarn --hp scale=-2`",
         "posenc run: yarn: hyperparameter 'scale' must be a number ≥ 1, got -2", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "yarn", "--hp", "scale=-2"), status=2),
    Case("run-all-hp", "posenc run", "`--all --hp scale=2`",
         "posenc run: --hp applies to one method; give an ID instead of --all", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "--all", "--hp", "scale=2"), status=2),
    Case("run-device", "posenc run", "`--device tpu`", "posenc run: unknown device 'tpu'; choose auto, cpu or cuda[:N]",
         NOTHING, f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--device", "tpu"), status=2),
    Case("run-jobs", "posenc run", "`--jobs 0`", "posenc run: --jobs must be >= 1, got 0", NOTHING,
         f"{RUN_T}::test_bad_arguments", argv=("run", "rope", "--jobs", "0"), status=2),
    Case("run-template", "posenc run", "`--template missing.ipynb`",
         "posenc run: --template missing.ipynb: not found", NOTHING, f"{RUN_T}::test_bad_arguments",
         argv=("run", "rope", "--template", "missing.ipynb"), status=2),
    Case("run-no-implementation", "posenc run", "a card whose `implementation` is null (`posenc run infini_attention`)",
         "posenc run: infini_attention: no implementation to run (taxonomy/methods/infini_attention.yaml: "
         "'implementation' is null: Changes the attention output …", NOTHING, f"{RUN_T}::test_bad_arguments",
         finding=8, argv=("run", "infini_attention"), status=2),
    Case("run-out-notebook-for-all", "posenc run", "`--all --out runs.ipynb` (one notebook name for many methods)",
         "posenc run: --out runs.ipynb: with several methods (or no .ipynb name) --out must be a folder", NOTHING,
         f"{RUN_T}::test_bad_arguments", finding=8, argv=("run", "--all", "--out", "runs.ipynb"), status=2),
    Case("run-out-dir", "posenc run", "`posenc run ID --out DIR` (a folder for one method)",
         "(the notebook is written to DIR/<ID>.ipynb)", "—", f"{RUN_T}::test_out_folder_for_one_method", finding=8),
    Case("run-broken-card", "posenc run", "a card with broken YAML in the repository (`run ID` and `run --all`)",
         "posenc run: taxonomy/methods/alibi.yaml:3: YAML error: did not find expected ',' or ']' (while parsing a "
         "flow sequence on line 2)", NOTHING, f"{RUN_T}::test_a_broken_card_is_named", finding=4, status=2),
    # ------------------------------------------------------------------ results keyed by configuration
    Case("override-apart", "results", "`posenc run nope --set steps=5` after the canonical run",
         "posenc run: nope@{tag}: running 1 seed(s) -> {notebook} (--set steps=5: stored apart from the preset's "
         "own results)", "the canonical `nope-seed0.json`, untouched: the run writes `nope@<tag>-seed0.json`",
         f"{EXP_T}::test_an_override_never_touches_the_canonical_result", finding=3),
    Case("override-all-not-skipped", "results", "`posenc run --all --set steps=5` after a complete canonical sweep",
         "(every method runs: its configuration key differs, so the canonical completion markers do not apply)",
         "every canonical result and marker", f"{EXP_T}::test_another_configuration_is_never_taken_for_complete",
         finding=3),
    Case("older-configuration", "results", "a result of another configuration at the canonical path (written "
         "under an older protocol or preset)",
         "{file}: holds configuration {old}, not {new}; kept as {aside}",
         "the old result, renamed `<file>.key-<its key>`",
         f"{EXP_T}::test_a_result_of_another_configuration_is_set_aside", finding=3),
    Case("truncated-result-run", "results", "a truncated result JSON met by a run",
         "{file}: not valid JSON, probably truncated (…", "the broken file, as `<file>.corrupt`; the seed is computed "
         "again", f"{EXP_T}::test_a_truncated_result_is_moved_aside_and_recomputed", finding=1),
    Case("complete-skipped", "results", "rerunning a complete method",
         "posenc run: {name}: complete, skipped (use --force to rerun)", "everything",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run", finding=1),
    # ------------------------------------------------------------------ a sweep killed at each stage
    Case("kill-training", "sweep killed (SIGKILL)", "during training of the first seed",
         "(the rerun runs the method: no result, no completion marker)", "finished checkpoints; nothing partial",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run", finding=1),
    Case("kill-seed-json", "sweep killed (SIGKILL)", "just after seed 0's result JSON is written",
         "(the rerun runs the method; seed 0's result is reused byte for byte)", "seed 0's result",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run", finding=1),
    Case("kill-notebook", "sweep killed (SIGKILL)", "while papermill runs the cells after the results",
         "(the half-run notebook is never taken for finished: the rerun executes it again)", "every seed's result",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run", finding=1),
    Case("kill-marker", "sweep killed (SIGKILL)", "after the notebook is written, before its completion marker",
         "(the rerun executes the notebook again, reusing the results, then writes the marker)",
         "every seed's result and the notebook",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run", finding=1),
    Case("marker-mismatch", "sweep", "a notebook or result changed after its completion marker was written",
         "(the marker's checksums no longer match: the method runs again)", "the files",
         "tests/experiment/test_results.py::test_marker_checks_key_protocol_and_checksums", finding=1),
    Case("kernel-dies", "sweep", "the notebook's kernel is killed (e.g. out of memory)",
         "posenc run: {name}: the notebook's kernel died (out of memory? killed?); its log: {log}",
         "finished seeds' results and the partial notebook; exit status 1",
         f"{EXP_T}::test_a_sweep_killed_at_every_stage_resumes_to_one_complete_run"),
    # ------------------------------------------------------------------ notebook parameters (papermill -p)
    Case("nb-seeds", "notebook", "papermill `-p seeds abc`",
         "notebook parameter 'seeds' must be None or a list of distinct ints >= 0 (e.g. [0, 1]), got 'abc' (str)",
         NOTHING, f"{EXP_T}::test_notebook_parameters_are_checked_by_the_first_cell", finding=8),
    Case("nb-seed-negative", "notebook", "papermill `-y 'seeds: [0, -1]'`",
         "notebook parameter 'seeds' must be None or a list of distinct ints >= 0 (e.g. [0, 1]), got [0, -1] (list)",
         NOTHING, f"{EXP_T}::test_notebook_parameter_types", finding=8),
    Case("nb-method", "notebook", "papermill `-p method 42`",
         "notebook parameter 'method' must be a registry id (a non-empty string), got 42 (int)", NOTHING,
         f"{EXP_T}::test_notebook_parameter_types", finding=8),
    Case("nb-hparams", "notebook", "papermill `-p hparams x`",
         "notebook parameter 'hparams' must be a mapping of names to values (e.g. {{}}), got 'x' (str)", NOTHING,
         f"{EXP_T}::test_notebook_parameter_types", finding=8),
    Case("nb-overrides", "notebook", "papermill `-y 'overrides: [1]'`",
         "notebook parameter 'overrides' must be a mapping of names to values (e.g. {{}}), got [1] (list)", NOTHING,
         f"{EXP_T}::test_notebook_parameter_types", finding=8),
    Case("nb-force", "notebook", "papermill `-p force yes`", "notebook parameter 'force' must be True or False, got "
         "'yes' (str)", NOTHING, f"{EXP_T}::test_notebook_parameter_types", finding=8),
    Case("api-head-dim", "Python API", "`posenc.build(\"rope\", head_dim=\"16\", ...)`",
         "rope: hyperparameter 'head_dim' must be a positive int, got '16'", "—",
         "tests/pe/test_base.py::test_head_dim_of_the_wrong_type_is_a_value_error", finding=8),
    # ------------------------------------------------------------------ checkpoints and disks
    Case("ckpt-foreign", "checkpoints", "a checkpoint of another method copied under this key",
         "checkpoint {path} holds method 'alibi' with configuration 'k-alibi', not 'nope' with 'k-nope'; remove it",
         "the checkpoint, untouched", f"{EXP_T}::test_a_foreign_checkpoint_is_refused_naming_both", finding=6),
    Case("ckpt-corrupt", "checkpoints", "a truncated checkpoint, or one whose checksum differs from its sidecar",
         "checkpoint {path}: unreadable or its checksum differs; moved aside to {name}.corrupt, training again",
         "the broken file, as `<name>.corrupt`", f"{EXP_T}::test_a_corrupt_checkpoint_is_moved_aside_and_retrained",
         finding=6),
    Case("disk-full-ckpt", "checkpoints", "a full disk while saving a checkpoint (`ulimit -f`)",
         "cannot write {path}: File too large", "the previous checkpoint; no temporary file",
         f"{EXP_T}::test_a_full_disk_keeps_the_old_files", finding=6),
    Case("disk-full-result", "results", "a full disk while writing a result JSON (`ulimit -f`)",
         "cannot write {path}: File too large", "the previous result; no temporary file",
         f"{EXP_T}::test_a_full_disk_keeps_the_old_files", finding=6),
    Case("concurrent-writers", "results", "two processes writing the same result and marker at once",
         "(each write replaces the file whole: a reader sees one complete version, never a mix)",
         "one complete version", f"{EXP_T}::test_concurrent_writers_leave_one_complete_version"),
    Case("determinism", "results", "two CPU runs with one seed",
         "(identical JSONs apart from timings, for a scratch method and an applied one with both variants and tasks)",
         "—", "tests/experiment/test_runner.py::test_two_runs_with_one_seed_give_identical_results"),
    # ------------------------------------------------------------------ leaderboard
    Case("lb-truncated", "posenc leaderboard", "a truncated result JSON",
         "posenc leaderboard: {file}: not valid JSON, probably truncated (…",
         "the previous leaderboard files, untouched; nothing is written",
         f"{RUN_T}::test_leaderboard_with_a_truncated_result_writes_nothing", finding=5),
    Case("lb-empty", "posenc leaderboard", "no results for the preset",
         "posenc leaderboard: no complete protocol-2 results under {folder}", NOTHING,
         f"{RUN_T}::test_leaderboard_with_a_truncated_result_writes_nothing"),
    # ------------------------------------------------------------------ Ctrl-C
    Case("sigint-run", "Ctrl-C", "Ctrl-C during `posenc run` (one notebook)",
         "posenc run: interrupted; kept 1 finished seed result(s) and 0 of 1 complete method(s); rerun the same "
         "command to resume", "every finished seed's result and every complete method; exit status 130",
         f"{RUN_T}::test_ctrl_c_during_a_run", finding=11),
    Case("sigint-run-jobs", "Ctrl-C", "Ctrl-C during `posenc run --all --jobs 2`",
         "posenc run: interrupted; kept {kept} finished seed result(s) and 0 of 2 complete method(s); rerun the same "
         "command to resume", "the same; the running kernels are stopped at once",
         f"{RUN_T}::test_ctrl_c_during_parallel_runs_stops_the_kernels", finding=11),
    Case("sigint-leaderboard", "Ctrl-C", "Ctrl-C during `posenc leaderboard`",
         "posenc leaderboard: interrupted; nothing written, the previous leaderboard files are kept",
         "the previous leaderboard files; exit status 130", f"{RUN_T}::test_ctrl_c_in_other_commands", finding=11),
    Case("sigint-book", "Ctrl-C", "Ctrl-C during `posenc book`",
         "posenc book: interrupted; the pages written so far are kept (each whole) and the HTML build is incomplete; "
         "rerun posenc book to finish", "every page written whole; exit status 130",
         f"{RUN_T}::test_ctrl_c_in_other_commands", finding=11),
    Case("sigint-other", "Ctrl-C", "Ctrl-C during any other command (e.g. `posenc validate`)",
         "posenc validate: interrupted", "(these commands write nothing); exit status 130",
         f"{RUN_T}::test_ctrl_c_in_other_commands", finding=11),
    # ------------------------------------------------------------------ cards
    Case("card-nan", "cards", "a NaN threshold in a claim's `expect`",
         "taxonomy/methods/alibi.yaml: claims[1].expect.value: expected a finite number, got nan", NOTHING,
         "tests/cards/test_validate.py::test_yaml_nan_in_expect_is_named", finding=7),
    Case("card-size", "cards", "a card over 1 MiB (e.g. 50 MB)",
         "{file}: file is 1,048,577 bytes, over the 1,048,576-byte limit for YAML files", "— (the file is not read)",
         "tests/test_paths.py::test_oversized_file_is_refused_without_being_read", finding=10),
    Case("card-alias-bomb", "cards", "a YAML alias bomb",
         "{file}: YAML error: the document expands to more than 100,000 nodes through its aliases (refused)",
         "— (refused before it is built)", "tests/test_paths.py::test_alias_bomb_is_refused_before_it_is_built",
         finding=10),
    Case("card-markup", "cards", "a card's formula that closes its fence and opens a MyST directive",
         "(`posenc validate` and the book build name the card and the field: see the book's tests)", NOTHING,
         "tests/cards/test_text.py::test_what_is_not_a_formula", finding=2),
    Case("bf16-weights", "models", "pure bf16 weights (`model.to(torch.bfloat16)`) for every registered method",
         "(trains and evaluates, finite)", "—", "tests/pe/test_properties.py::test_pure_bf16_weights", finding=9),
]

CASES: dict[str, Case] = {c.id: c for c in _CASES}
assert len(CASES) == len(_CASES), "case ids must be unique"


def case(case_id: str) -> Case:
    return CASES[case_id]
