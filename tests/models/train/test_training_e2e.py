"""A tiny end-to-end training run, as CI can afford it (about a minute on 2 cores).

danet-phantom makes small phantom cases (160 x 160 x 96: fewer, smaller slices than BraTS), and
danet-train runs both stages on the "tiny" bank: the stage-1 loss must go down, Eq. 4 labels
must be written for every slice, the bundle must load and carry its validation. The run is
killed mid-way once and must resume from its checkpoint. danet-eval then evaluates the bundle
and its JSON must have the documented names. danet-phantom's --solid_cores checks are tested
here too (the phantoms these runs train on).

Run by ctest with DANET_PHANTOM, DANET_TRAIN, DANET_EVAL, DANET_BANK, DANET_SEGMENT and DANET_TMP
set.
"""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import time
import unittest

import torch

TOOLS = {name: os.environ.get(f"DANET_{name.upper()}", f"danet-{name}")
         for name in ("phantom", "train", "eval", "bank", "segment")}
TMP = os.environ.get("DANET_TMP", "/tmp/danet_training_e2e")
DIMS = "160,160,96"


def train_command(out, work):
    return [TOOLS["train"], "--train_data", os.path.join(TMP, "train"),
            "--val_data", os.path.join(TMP, "val"), "--out", out, "--work", work,
            "--preset", "tiny", "--bank_steps", "60", "--batch", "4", "--crop", "64",
            "--bank_lr", "0.005", "--warmup", "5", "--decision_steps", "30",
            "--decision_batch", "8", "--checkpoint_every", "20", "--threads", "2",
            "--seed", "3", "--bias_correction", "poly3", "--bias_flair_bright_sigmas", "1",
            "--thick_slices", "0.2"]


def eq4_costs(bundle):
    """Eq. 4's cost term of each bank model: the softmax of 1 / GMACs over the bundle's models."""
    with open(os.path.join(bundle, "bundle.pbtxt")) as f:
        text = f.read()
    models = text[text.index("models {"):]
    gmacs = [float(x.split()[0]) for x in models.split("gmacs_per_slice:")[1:]]
    assert len(gmacs) == 4, gmacs
    top = max(1.0 / g for g in gmacs)
    weights = [math.exp(1.0 / g - top) for g in gmacs]
    return [w / sum(weights) for w in weights]


def eq4_values(scores, cost, alpha=0.001):
    """Eq. 4 per model: (1 - alpha) * score + alpha * cost (the trainer's default alpha)."""
    return [(1 - alpha) * s + alpha * c for s, c in zip(scores, cost)]


def read_bytes(bundle, name):
    with open(os.path.join(bundle, name), "rb") as f:
        return f.read()


def log_lines(work, stage):
    with open(os.path.join(work, "train.log")) as f:
        return [json.loads(line) for line in f if json.loads(line).get("stage") == stage]


class TrainingEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(TMP, ignore_errors=True)
        for split, seed, cases, family in (("train", "11", "2", "training"),
                                           ("val", "12", "1", "training"),
                                           ("shift", "900012", "1", "shift")):
            subprocess.run([TOOLS["phantom"], "--out", os.path.join(TMP, split), "--cases", cases,
                            "--seed", seed, "--dims", DIMS, "--family", family], check=True,
                           capture_output=True, timeout=120)
        cls.out = os.path.join(TMP, "bundle")
        cls.work = os.path.join(TMP, "work")
        # First run: killed once stage 1 has checkpointed step 20.
        proc = subprocess.Popen(train_command(cls.out, cls.work), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        state = os.path.join(cls.work, "state.json")
        deadline = time.monotonic() + 240
        cls.killed_at = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with open(state) as f:
                    step = json.load(f)["bank_step"]
                if step >= 20:
                    proc.send_signal(signal.SIGKILL)
                    cls.killed_at = step
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        proc.wait(timeout=60)
        # Second run: resumes and finishes.
        cls.resumed = subprocess.run(train_command(cls.out, cls.work), capture_output=True,
                                     text=True, timeout=600)

    def copy_of_work(self, name):
        """A fresh copy of the finished work directory, and an output path beside it."""
        work, out = os.path.join(TMP, f"{name}.work"), os.path.join(TMP, name)
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(self.work, work)
        return work, out

    def redo_on_copy(self, name, *flags):
        """--redo_decision with `flags` on a copy_of_work(name); it must succeed."""
        work, out = self.copy_of_work(name)
        redo = subprocess.run(train_command(out, work) + ["--redo_decision", *flags],
                              capture_output=True, text=True, timeout=600)
        self.assertEqual(redo.returncode, 0, redo.stderr[-3000:])
        return work, out

    def test_resumed_after_kill_and_finished(self):
        self.assertIsNotNone(self.killed_at, "the first run finished before it could be killed")
        self.assertEqual(self.resumed.returncode, 0, self.resumed.stderr[-3000:])
        self.assertIn(f"resuming: bank step {self.killed_at}", self.resumed.stderr)
        with open(os.path.join(self.work, "state.json")) as f:
            state = json.load(f)
        self.assertEqual(state["bank_step"], 60)
        self.assertEqual(state["decision_step"], 30)
        self.assertTrue(state["labels_done"])

    def test_stage1_loss_goes_down(self):
        losses = [line["loss"] for line in log_lines(self.work, 1)]
        self.assertGreaterEqual(len(losses), 5, losses)
        # The sampling recipe is logged each time stage 1 starts (the run is resumed once).
        recipes = log_lines(self.work, "bank_recipe")
        self.assertEqual(recipes[0]["from_step"], 0)
        self.assertTrue(all(r["tumour_crops"] == "slice" for r in recipes), recipes)
        self.assertTrue(all(r["augment"] == "nnunet+thick_slices:0.2" for r in recipes), recipes)
        # Dice + cross-entropy on augmented crops is noisy from step to step: compare the
        # mean of the first two logged losses with the mean of the last three.
        first, last = sum(losses[:2]) / 2, sum(losses[-3:]) / 3
        self.assertLess(last, first - 0.2, losses)

    def test_decision_labels_cover_every_slice(self):
        with open(os.path.join(self.work, "decision_labels.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), 2 * 96)
        tumour = [r for r in rows if r["foreground"] == "1"]
        self.assertTrue(tumour)
        for r in rows:
            if r["foreground"] == "0":
                self.assertEqual(r["route"], "0")
        for r in tumour:
            self.assertIn(r["route"], {"1", "2", "3", "4"})
            scores = [float(r[f"S_M{i}"]) for i in range(1, 5)]
            self.assertTrue(all(0.0 <= s <= 1.0 for s in scores))
            # Eq. 4 with alpha = 0.001: the chosen model is (one of) the best scoring.
            self.assertGreaterEqual(scores[int(r["route"]) - 1], max(scores) - 0.001)
            # The voxel-error scores (--slice_score errors) are stored beside them: at most 1,
            # and 1 exactly where the Dice form says the slice is perfect.
            errors = [float(r[f"E_M{i}"]) for i in range(1, 5)]
            self.assertTrue(all(e <= 1.0 for e in errors))
            for s, e in zip(scores, errors):
                if s == 1.0:
                    self.assertEqual(e, 1.0)

    def test_teacher_labels_are_the_starting_networks_first_model(self):
        # --decision_labels teacher: a tumour slice's route is the model the --init_bundle's
        # decision network ranks first, its stored scores that network's model probabilities
        # (renormalised without skip), checked against the engine's own pass (danet-segment's
        # per-slice probabilities of the same bundle); tumour-free slices stay skip; stage 2
        # trains a new network on them.
        work, out = os.path.join(TMP, "teacher.work"), os.path.join(TMP, "teacher")
        shutil.rmtree(work, ignore_errors=True)
        command = train_command(out, work)
        command[command.index("--bank_steps") + 1] = "0"
        command += ["--init_bundle", self.out, "--decision_labels", "teacher",
                    "--label_slices_per_case", "0"]
        taught = subprocess.run(command, capture_output=True, text=True, timeout=600)
        self.assertEqual(taught.returncode, 0, taught.stderr[-3000:])
        self.assertIn("labels: teacher", taught.stderr)
        self.assertIn("stage 2", taught.stderr)
        self.assertNotEqual(read_bytes(out, "decision.pt"), read_bytes(self.out, "decision.pt"))
        with open(os.path.join(work, "decision_labels.csv")) as f:
            rows = list(csv.DictReader(f))
        tumour = [r for r in rows if r["foreground"] == "1"]
        self.assertTrue(tumour)
        self.assertTrue(all(r["route"] == "0" for r in rows if r["foreground"] == "0"))
        engine = {}
        for case in sorted({r["case"] for r in tumour}):
            report = os.path.join(TMP, f"teacher_{case}.json")
            seg = subprocess.run([TOOLS["segment"], "--bundle", self.out, "--case_dir",
                                  os.path.join(TMP, "train", case), "--policy", "dynamic",
                                  "--threads", "2", "--json", report],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(seg.returncode, 0, seg.stderr[-2000:])
            with open(report) as f:
                for sl in json.load(f)["slices"]:
                    models = sl["probabilities"][1:]
                    engine[(case, sl["index"])] = [p / sum(models) for p in models]
        cost = eq4_costs(self.out)
        for r in tumour:
            scores = [float(r[f"S_M{i}"]) for i in range(1, 5)]
            self.assertEqual(scores, [float(r[f"E_M{i}"]) for i in range(1, 5)])
            self.assertAlmostEqual(sum(scores), 1.0, delta=1e-4)
            # The route is Eq. 4's choice (alpha 0.001: a cheaper model wins a near tie) from
            # the unrounded probabilities; the stored ones have 5 decimals.
            values = eq4_values(scores, cost)
            self.assertGreaterEqual(values[int(r["route"]) - 1], max(values) - 1e-5)
            # The engine folds BatchNorm and runs channels-last: equal to rounding.
            theirs = engine[(r["case"], int(r["slice"]))]
            for mine, other in zip(scores, theirs):
                self.assertAlmostEqual(mine, other, delta=2e-3)
            ranked = sorted(theirs, reverse=True)
            if ranked[0] - ranked[1] > 4e-3:
                self.assertEqual(int(r["route"]), 1 + theirs.index(ranked[0]))
        # Redoing stage 2 on these labels needs the same source named again.
        eq4 = command[:command.index("--decision_labels")] + ["--redo_decision"]
        redo = subprocess.run(eq4, capture_output=True, text=True, timeout=600)
        self.assertNotEqual(redo.returncode, 0)
        self.assertIn("holds routes from teacher", redo.stderr)
        # teacher_policy: the same teacher's routes under --default_policy's model preference
        # (+pM2:3): its probabilities times e^preference, renormalised, so the route is the model
        # the policy serves (M2 unless another has more than e^3 times its probability).
        pwork, pout = work + "_policy", out + "_policy"
        shutil.rmtree(pwork, ignore_errors=True)
        pcommand = train_command(pout, pwork)
        pcommand[pcommand.index("--bank_steps") + 1] = "0"
        pcommand[pcommand.index("--decision_steps") + 1] = "1"
        pcommand += ["--init_bundle", self.out, "--decision_labels", "teacher_policy",
                     "--label_slices_per_case", "0", "--default_policy", "dynamic+pM2:3"]
        preferred = subprocess.run(pcommand, capture_output=True, text=True, timeout=600)
        self.assertEqual(preferred.returncode, 0, preferred.stderr[-3000:])
        self.assertIn("labels: teacher_policy", preferred.stderr)
        with open(os.path.join(pwork, "decision_labels.csv")) as f:
            prows = [r for r in csv.DictReader(f) if r["foreground"] == "1"]
        self.assertEqual(len(prows), len(tumour))
        moved = 0
        for r in prows:
            theirs = engine[(r["case"], int(r["slice"]))]
            weighted = [p * (math.exp(3) if i == 1 else 1) for i, p in enumerate(theirs)]
            expected = [w / sum(weighted) for w in weighted]
            scores = [float(r[f"S_M{i}"]) for i in range(1, 5)]
            for mine, other in zip(scores, expected):
                self.assertAlmostEqual(mine, other, delta=2e-3)
            ranked = sorted(expected, reverse=True)
            if ranked[0] - ranked[1] > 4e-3:
                self.assertEqual(int(r["route"]), 1 + expected.index(ranked[0]))
            moved += theirs.index(max(theirs)) != expected.index(max(expected))
        print(f"teacher_policy: {moved} of {len(prows)} tumour slices' routes moved by +pM2:3")
        # A teacher must be a trained network, and the choice is checked.
        for flags, message in ((["--decision_labels", "teacher"], "--init_bundle"),
                               (["--decision_labels", "teacher_policy"], "--init_bundle"),
                               (["--decision_labels", "oracle", "--init_bundle", self.out],
                                "eq4, teacher or teacher_policy"),
                               (["--tumour_map_positive_weight", "0"],
                                "--tumour_map_positive_weight above 0"),
                               # The map's loss weights need a network with a map.
                               (["--tumour_map_weight", "2"],
                                "add --decision_tumour_head=true"),
                               (["--decision_tumour_head_stage", "2"], "needs a tumour head"),
                               (["--decision_tumour_head=true", "--decision_tumour_head_stage",
                                 "5"], "tumour_head_stage must be 0 (the head) or a stage 1..3"),
                               (["--decision_stem_pool_stride", "0"],
                                "--decision_stem_pool_stride must be 1 (no pool) or 2, not 0"),
                               (["--decision_max_pool=true", "--decision_steps", "0"],
                                "needs --decision_steps above 0")):
            refused = subprocess.run(train_command(out + "_x", work + "_x") + flags,
                                     capture_output=True, text=True, timeout=120)
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn(message, refused.stderr)

    def test_decision_finetune_on_the_box_starts_from_the_trained_network(self):
        # --decision_finetune: stage 2 continues from --init_bundle's decision network instead
        # of a fresh one; --decision_crop_to_brain sets the bundle's decision.crop_to_brain (and
        # trains on the box). Two steps at a tiny learning rate: the fine-tuned network still
        # routes like the starting one (only BatchNorm's running statistics move), a fresh one
        # of the same seed does not.
        def run(name, *flags):
            work, out = os.path.join(TMP, name + ".work"), os.path.join(TMP, name)
            shutil.rmtree(work, ignore_errors=True)
            command = train_command(out, work)
            command[command.index("--bank_steps") + 1] = "0"
            command[command.index("--decision_steps") + 1] = "2"
            command += ["--init_bundle", self.out, "--decision_labels", "teacher",
                        "--decision_lr", "1e-9", "--decision_crop_to_brain=true", *flags]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            self.assertEqual(done.returncode, 0, done.stderr[-3000:])
            with open(os.path.join(out, "bundle.pbtxt")) as f:
                self.assertIn("crop_to_brain: true", f.read())
            return out

        def probabilities(bundle):
            report = os.path.join(bundle, "segment.json")
            case = os.path.join(TMP, "val", sorted(os.listdir(os.path.join(TMP, "val")))[0])
            seg = subprocess.run([TOOLS["segment"], "--bundle", bundle, "--case_dir", case,
                                  "--policy", "dynamic", "--threads", "2", "--json", report,
                                  "--crop_decision=true"],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(seg.returncode, 0, seg.stderr[-2000:])
            with open(report) as f:
                return [p for sl in json.load(f)["slices"] for p in sl["probabilities"]]

        start = probabilities(self.out)
        tuned = probabilities(run("finetune", "--decision_finetune"))
        fresh_bundle = run("fresh")
        fresh = probabilities(fresh_bundle)
        moved = sum(abs(a - b) for a, b in zip(tuned, start))
        self.assertLess(moved, 0.5 * sum(abs(a - b) for a, b in zip(fresh, start)))
        # Grown by a tumour map on stage 2's grid: the new feature starts at a classifier weight
        # of 0, so at this learning rate the grown network still routes like the starting one.
        grown = run("grown", "--decision_finetune", "--decision_tumour_head=true",
                    "--decision_tumour_head_stage", "2", "--tumour_map_positive_weight", "5")
        with open(os.path.join(grown, "bundle.pbtxt")) as f:
            text = f.read()
        self.assertIn("tumour_head: true", text)
        self.assertIn("tumour_head_stage: 2", text)
        grown_weights = torch.load(os.path.join(grown, "decision.pt"))
        self.assertLess(grown_weights["classifier.weight"][:, -1].abs().max().item(), 1e-6)
        moved = sum(abs(a - b) for a, b in zip(probabilities(grown), start))
        self.assertLess(moved, 0.5 * sum(abs(a - b) for a, b in zip(fresh, start)))
        # A grown fine-tune with stage 1 before it, paused after a stage-1 step: the checkpoint
        # holds the trained network in its own architecture (the new one is installed when stage
        # 2 starts), so the run resumes, here without the flag (state.json keeps the pending
        # architecture), and finishes with the tumour map, its classifier column still 0.
        resumed = os.path.join(TMP, "grown_resumed")
        shutil.rmtree(resumed + ".work", ignore_errors=True)
        command = train_command(resumed, resumed + ".work")
        command[command.index("--bank_steps") + 1] = "2"
        command[command.index("--decision_steps") + 1] = "2"
        command += ["--init_bundle", self.out, "--decision_labels", "teacher", "--decision_lr",
                    "1e-9", "--decision_finetune", "--decision_tumour_head=true"]
        paused = subprocess.run(command + ["--pause_after_bank_step", "1"], capture_output=True,
                                text=True, timeout=600)
        self.assertEqual(paused.returncode, 0, paused.stderr[-3000:])
        self.assertIn("paused after stage-1 step 1", paused.stdout)
        command.remove("--decision_tumour_head=true")
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        with open(os.path.join(resumed, "bundle.pbtxt")) as f:
            self.assertIn("tumour_head: true", f.read())
        resumed_weights = torch.load(os.path.join(resumed, "decision.pt"))
        self.assertLess(resumed_weights["classifier.weight"][:, -1].abs().max().item(), 1e-6)
        # On pooled input (--decision_input_downsample 2) and without the stem's max pool
        # (--decision_stem_pool_stride 1), neither of which changes a weight's shape: the trained
        # weights go into the rebuilt network (at this learning rate its convolutions are the
        # starting network's, a fresh one's are not), and the bundle serves it so, at its cost
        # counted again (a little over a quarter of the starting network's; without the pool
        # more, though not 4x: the stem's cost stays, 1.9x for the tiny preset, 2.6x full size).
        def decision_gmacs(bundle):
            with open(os.path.join(bundle, "bundle.pbtxt")) as f:
                text = f.read()
            block = text[text.index("decision {"):]
            return block, float(block.split("gmacs_per_slice:")[1].split()[0])

        start_block, start_gmacs = decision_gmacs(self.out)
        weights = {name: torch.load(os.path.join(bundle, "decision.pt"))
                   for name, bundle in (("start", self.out), ("fresh", fresh_bundle))}
        kernels = [k for k, v in weights["start"].items() if v.dim() == 4]
        self.assertTrue(kernels)
        self.assertGreater(max((weights["fresh"][k].float() - weights["start"][k].float())
                               .abs().max().item() for k in kernels), 1e-2)
        self.assertNotIn("stem_pool_stride", start_block)
        for name, flag, value, marker, low, high in (
                ("pooled", "--decision_input_downsample", "2", "input_downsample: 2", 0.2, 0.4),
                ("finer", "--decision_stem_pool_stride", "1", "stem_pool_stride: 1", 1.5, 4.0)):
            bundle = run(name, "--decision_finetune", flag, value)
            block, gmacs = decision_gmacs(bundle)
            self.assertIn(marker, block)
            self.assertGreater(gmacs / start_gmacs, low, name)
            self.assertLess(gmacs / start_gmacs, high, name)
            self.assertEqual(len(probabilities(bundle)), len(start))
            tuned = torch.load(os.path.join(bundle, "decision.pt"))
            for k in kernels:
                start_k = weights["start"][k].float()
                self.assertLess((tuned[k].float() - start_k).abs().max().item(), 1e-3, k)
        # It needs a trained network to continue from.
        refused = subprocess.run(train_command(os.path.join(TMP, "ft2"),
                                               os.path.join(TMP, "ft2.work")) +
                                 ["--decision_finetune"], capture_output=True, text=True,
                                 timeout=120)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("--decision_finetune", refused.stderr)

    def test_bundle_loads_and_carries_validation(self):
        check = subprocess.run([TOOLS["bank"], "check", "--bundle", self.out],
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(check.returncode, 0, check.stderr)
        with open(os.path.join(self.out, "bundle.pbtxt")) as f:
            config = f.read()
        self.assertIn('weight_dtype: "float16"', config)
        self.assertIn('bias_correction: "poly3"', config)  # trained on corrected images
        self.assertIn("bias_flair_bright_sigmas: 1", config)
        self.assertIn("provenance:", config)
        self.assertGreaterEqual(config.count("cases: 1"), 5)  # 4 models + dynamic

    def test_bad_bias_settings_are_refused(self):
        cases = ((["--bias_correction", "n4"], "--bias_correction: 'n4' is not one of: none, poly1"),
                 (["--bias_flair_bright_sigmas", "12"],
                  "--bias_flair_bright_sigmas: 12 is not a limit"),
                 (["--uncorrected_share", "1.5"], "--uncorrected_share must be in 0..1"),
                 (["--bias_correction", "none", "--uncorrected_share", "0.5"],
                  "--uncorrected_share: the bundle has no bias correction"))
        for extra, message in cases:
            refused = subprocess.run(train_command(os.path.join(TMP, "bad_bias"),
                                                   os.path.join(TMP, "bad_bias.work")) + extra,
                                     capture_output=True, text=True, timeout=120)
            self.assertNotEqual(refused.returncode, 0, extra)
            self.assertIn(message, refused.stderr)

    def test_a_resume_with_other_uncorrected_cases_is_refused(self):
        work, out = self.copy_of_work("share")
        with open(os.path.join(work, "state.json")) as f:
            self.assertEqual(json.load(f)["uncorrected_cases"], [])  # all were corrected
        refused = subprocess.run(train_command(out, work) + ["--uncorrected_share", "1"],
                                 capture_output=True, text=True, timeout=300)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("training cases without the bias correction: 2 of 2", refused.stderr)
        self.assertIn("the interrupted run trained 0 cases without the bias correction, this one "
                      "would train 2", refused.stderr)

    def test_eval_json_has_the_documented_names(self):
        out = os.path.join(TMP, "eval.json")
        result = subprocess.run([TOOLS["eval"], "--bundle", self.out, "--data",
                                 os.path.join(TMP, "val"), "--shift_data",
                                 os.path.join(TMP, "shift"), "--threads", "2", "--json", out,
                                 "--csv", os.path.join(TMP, "eval.csv")],
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("not clinical accuracy", result.stdout)
        self.assertIn("in distribution (1 cases) | shift (1 cases)", result.stdout)
        with open(out) as f:
            evaluation = json.load(f)
        for results in (evaluation, evaluation["shift"]):
            self.assertEqual(results["cases"], 1)
            self.assertEqual(set(results["policies"]),
                             {"dynamic", "static:M1", "static:M2", "static:M3", "static:M4"})
            for name, p in results["policies"].items():
                for key in ("gmacs_per_case", "seconds_per_case", "dice", "hd95", "routes",
                            "tumour_slice_recall", "tumour_free_skip_rate"):
                    self.assertIn(key, p, name)
                self.assertEqual(set(p["dice"]), {"et", "tc", "wt", "mean"})
                self.assertEqual(set(p["routes"]), {"skip", "M1", "M2", "M3", "M4"})
                self.assertEqual(sum(p["routes"].values()), 96)
                # The skip rate is the share of tumour-free slices routed to skip.
                case = p["per_case"][0]
                self.assertAlmostEqual(
                    p["tumour_free_skip_rate"],
                    case["tumour_free_skipped"] / case["tumour_free_slices"])
                self.assertEqual(case["tumour_slices"] + case["tumour_free_slices"], 96)
            m1 = results["policies"]["static:M1"]
            self.assertEqual(m1["routes"]["M1"], 96)
            self.assertEqual(m1["tumour_slice_recall"], 1.0)
            self.assertEqual(m1["tumour_free_skip_rate"], 0.0)
        with open(os.path.join(TMP, "eval.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), 2 * 5)
        self.assertEqual({r["set"] for r in rows}, {"in_distribution", "shift"})
        self.assertIn("tumour_free_skipped", rows[0])

    def test_redo_decision_equals_a_fresh_stage_2_and_sets_the_default_policy(self):
        # --redo_decision on a copy of the finished work directory, same settings: stage 2
        # starts from the same seeded network and labels, so the decision network is the same
        # bytes as the fresh run's (this is how the shipped bundle's was made).
        work, out = self.redo_on_copy("redo", "--default_policy", "dynamic+m1", "--name", "redo")
        with open(os.path.join(self.out, "decision.pt"), "rb") as a, \
                open(os.path.join(out, "decision.pt"), "rb") as b:
            self.assertEqual(a.read(), b.read(), "the redone decision network differs")
        with open(os.path.join(out, "bundle.pbtxt")) as f:
            config = f.read()
        self.assertIn('default_policy: "dynamic+m1"', config)
        self.assertIn('name: "redo"', config)
        # danet-eval's default policies include the bundle's default.
        result = subprocess.run([TOOLS["eval"], "--bundle", out, "--data", os.path.join(TMP, "val"),
                                 "--threads", "2", "--hd95=false", "--json",
                                 os.path.join(TMP, "redo-eval.json")],
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(TMP, "redo-eval.json")) as f:
            policies = set(json.load(f)["policies"])
        self.assertEqual(policies, {"dynamic", "dynamic+m1", "static:M1", "static:M2",
                                    "static:M3", "static:M4"})
        # A bad default policy fails before any training, naming the flag.
        bad = subprocess.run(train_command(os.path.join(TMP, "bad"), work) + [
            "--redo_decision", "--default_policy", "static:M9"],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("--default_policy: the bundle's default_policy: policy 'static:M9'",
                      bad.stderr)

    def test_redo_decision_with_error_scores_relabels_from_the_stored_scores(self):
        # --slice_score errors re-derives every route from the stored E_ columns with Eq. 4
        # (alpha 0.001, ties to the cheaper model); the report's histogram must match.
        work, out = self.redo_on_copy("errors", "--slice_score", "errors", "--decision_steps", "5")
        cost = eq4_costs(self.out)
        expected = [0] * 5
        with open(os.path.join(work, "decision_labels.csv")) as f:
            for r in csv.DictReader(f):
                if r["foreground"] == "0":
                    expected[0] += 1
                    continue
                values = eq4_values([float(r[f"E_M{i + 1}"]) for i in range(4)], cost)
                expected[1 + max(range(4), key=lambda i: (values[i], -i))] += 1
        with open(os.path.join(work, "report.json")) as f:
            self.assertEqual(json.load(f)["decision_label_histogram"], expected)
        bad = subprocess.run(train_command(out, work) + ["--slice_score", "voxels"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("--slice_score must be dice or errors", bad.stderr)

    def test_decision_input_downsample_needs_a_fresh_stage_2(self):
        # --decision_input_downsample changes the decision network: refused on a work directory
        # whose stage 2 has run, accepted with --redo_decision, stored in the bundle with its
        # cost counted again (a little over a quarter of the full-resolution network's).
        work, out = self.copy_of_work("pooled")
        refused = subprocess.run(train_command(out, work) + ["--decision_input_downsample", "2"],
                                 capture_output=True, text=True, timeout=300)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("add --redo_decision", refused.stderr)
        redo = subprocess.run(train_command(out, work) + [
            "--redo_decision", "--decision_input_downsample", "2"],
            capture_output=True, text=True, timeout=600)
        self.assertEqual(redo.returncode, 0, redo.stderr[-3000:])

        def decision(path):
            with open(os.path.join(path, "bundle.pbtxt")) as f:
                text = f.read()
            block = text[text.index("decision {"):]
            gmacs = float(block.split("gmacs_per_slice:")[1].split()[0])
            return "input_downsample: 2" in block, gmacs

        pooled, pooled_gmacs = decision(out)
        plain, plain_gmacs = decision(self.out)
        self.assertTrue(pooled)
        self.assertFalse(plain)
        # The head and classifier do not shrink with the input: a little over a quarter.
        self.assertGreater(pooled_gmacs / plain_gmacs, 0.2)
        self.assertLess(pooled_gmacs / plain_gmacs, 0.4)
        check = subprocess.run([TOOLS["bank"], "check", "--bundle", out],
                               capture_output=True, text=True, timeout=300)
        self.assertEqual(check.returncode, 0, check.stderr)

    def test_tumour_head_trains_on_the_masks_and_the_bundle_serves(self):
        # --decision_tumour_head adds a supervised tumour map to the decision network: stored in
        # the bundle, its weights in decision.pt, and the bundle loads and runs (danet-bank
        # describe counts a forward pass); the first run's network has no such map.
        _, out = self.redo_on_copy("tumour", "--decision_tumour_head=true",
                                   "--tumour_map_weight", "2")
        with open(os.path.join(out, "bundle.pbtxt")) as f:
            self.assertIn("tumour_head: true", f.read())
        with open(os.path.join(self.out, "bundle.pbtxt")) as f:
            self.assertNotIn("tumour_head", f.read())
        with open(os.path.join(out, "decision.pt"), "rb") as f:
            self.assertIn(b"tumour.weight", f.read())
        described = subprocess.run([TOOLS["bank"], "describe", "--bundle", out],
                                   capture_output=True, text=True, timeout=300)
        self.assertEqual(described.returncode, 0, described.stderr)
        self.assertIn("tumour head", described.stdout)

    def fine_tune(self, name, *extra):
        """5 stage-1 steps from the trained bundle with --keep_decision (and `extra`) into
        TMP/name: (bundle, work directory, command without `extra`, completed process)."""
        work, out = os.path.join(TMP, name + ".work"), os.path.join(TMP, name)
        shutil.rmtree(work, ignore_errors=True)
        command = train_command(out, work)
        command[command.index("--bank_steps") + 1] = "5"
        command += ["--init_bundle", self.out, "--keep_decision"]
        tuned = subprocess.run(command + list(extra), capture_output=True, text=True,
                               timeout=600)
        return out, work, command, tuned

    def test_keep_decision_fine_tunes_the_bank_only(self):
        # --keep_decision: stage 1 from --init_bundle, then no labels and no stage 2; the
        # bundle carries the starting bundle's decision network unchanged and new bank weights.
        out, work, _, tuned = self.fine_tune("keep")
        self.assertEqual(tuned.returncode, 0, tuned.stderr[-3000:])
        self.assertNotIn("stage 2", tuned.stderr)
        self.assertFalse(os.path.exists(os.path.join(work, "decision_labels.csv")))
        self.assertEqual(read_bytes(out, "decision.pt"), read_bytes(self.out, "decision.pt"))
        self.assertNotEqual(read_bytes(out, "M1.pt"), read_bytes(self.out, "M1.pt"))
        # It needs a trained decision network to keep.
        refused = subprocess.run(train_command(os.path.join(TMP, "keep2"),
                                               os.path.join(TMP, "keep2.work")) +
                                 ["--keep_decision"], capture_output=True, text=True, timeout=120)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("--keep_decision", refused.stderr)

    def test_models_stopped_at_step_0_keep_their_weights(self):
        # --stop_steps ID=0 leaves a model untrained: with --keep_decision only the others
        # change (how the shipped bank's M1 and M4 were tuned alone); --foreground_fraction
        # sets the share of tumour-centred crops and is checked.
        out, _, command, tuned = self.fine_tune("stop", "--stop_steps", "M2=0,M3=0",
                                                "--foreground_fraction", "0.3")
        self.assertEqual(tuned.returncode, 0, tuned.stderr[-3000:])
        for kept in ("M2.pt", "M3.pt", "decision.pt"):
            self.assertEqual(read_bytes(out, kept), read_bytes(self.out, kept), kept)
        for trained in ("M1.pt", "M4.pt"):
            self.assertNotEqual(read_bytes(out, trained), read_bytes(self.out, trained), trained)
        bad = subprocess.run(command + ["--foreground_fraction", "1.5"], capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("--foreground_fraction", bad.stderr)


class SolidCoreFlags(unittest.TestCase):
    """danet-phantom --solid_cores: a share in 0..1, for the randomised training family only.
    Refused before any case is written, with exit code 2 and a message naming the flag."""

    def refused(self, *flags):
        out = os.path.join(TMP, "refused-phantoms")
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([TOOLS["phantom"], "--out", out, "--cases", "1", "--dims", DIMS,
                              *flags], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertFalse(os.path.exists(out) and os.listdir(out), "a case was written")
        return run.stderr

    def test_share_outside_0_to_1_is_refused(self):
        for value in ("1.5", "-0.1", "nan"):
            self.assertIn("--solid_cores is a share in 0..1",
                          self.refused("--solid_cores", value))

    def test_other_families_and_styles_are_refused(self):
        needs = "--solid_cores needs --family training --style randomized"
        self.assertIn(needs, self.refused("--solid_cores", "0.5", "--family", "shift"))
        self.assertIn(needs, self.refused("--solid_cores", "0.5", "--style", "classic"))
        # The same share for the family it is for is accepted and writes the case.
        out = os.path.join(TMP, "solid-phantom")
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([TOOLS["phantom"], "--out", out, "--cases", "1", "--dims", DIMS,
                              "--solid_cores", "0.5"], capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(len(os.listdir(out)), 1)

    def test_solid_look_needs_solid_cores_and_a_known_name(self):
        needs = "--solid_look is classic or wide (wide needs --solid_cores)"
        self.assertIn(needs, self.refused("--solid_look", "wide"))
        self.assertIn(needs, self.refused("--solid_look", "bright", "--solid_cores", "0.5"))


class TumourCropsFlag(unittest.TestCase):
    """danet-train --tumour_crops: slice or class; anything else is refused before any case is
    read (exit code 2, the flag and the choices named)."""

    def test_an_unknown_value_is_refused(self):
        out = os.path.join(TMP, "refused-tumour-crops")
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([TOOLS["train"], "--train_data", os.path.join(TMP, "no-such-data"),
                              "--out", out, "--tumour_crops", "voxel"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("--tumour_crops: 'voxel': choose slice or class", run.stderr)
        self.assertFalse(os.path.exists(out), "an output was written")


if __name__ == "__main__":
    unittest.main()
