#!/usr/bin/env python3
"""GPU check of ilgpu-llama against Hugging Face transformers at full Llama 3.2 1B size.

Runs on the device machine (PyTorch + transformers, no .NET SDK) via tools/device/run.sh, which
gives it an absolute deadline. Steps run decisive first (see STEPS): copy bandwidth and the model;
decode tg128 of every decode variant at batch 1 and 4; the matvec kernels timed back to back;
Q8_0/Q4_0 decode; logits of every variant and format against transformers; compute-sanitizer;
the CUDA-graph cache under 50 mixed requests; wide batches, serve, attention, pp512; greedy
token-by-token checks, memory, transformers timing; ncu last on the winning variant.

The script is steps over one Run: a Run holds the arguments, the results, the deadline, the running
step's end and the CLI children; every step is a function step(run, res) that fills res (its entry in
the results) as it goes. STEPS declares each step once, in the order of the run, with its caps.

Nothing is lost to a timeout: every step has a cap and the deadline caps it further (a step that
cannot start in the time left is recorded `skipped (deadline)`); results.json, summary.json and
results.md in --out are rewritten (atomically) after every CLI call and step, with each step's
status (ok / failed / skipped / timeout / running) and seconds, and figures not measured yet as
null. A step's CLI children run in their own process group, killed when the step runs out of time,
and die with this script (PR_SET_PDEATHSIG) if it is killed.

--cpu-smoke runs the ilgpu-llama half on the CPU accelerator with the built-in demo model and its
own tiny sizes (4 new tokens, pp16, tg4, 1 repeat, tiny kernel shapes, no torch): tools/test.sh
runs it so CI fails when this script or a CLI flag it uses breaks.
--only STEP,... reruns the named steps into the results already in --out (a second GPU call).
Standard library only, except the steps that need torch (imported inside them).
"""
import argparse
import ctypes
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

VARIANTS = ("baseline", "fused-norm", "fused-norm-short-attn", "persistent")
QUANT_FORMATS = ("q8_0", "q6_k", "q5_k", "q4_k_m", "q4_k", "q4_0")  # the smoke runs the last
SANITIZER_FORMATS = ("fp16", "bf16", "q8_0", "q4_k", "q6_k", "q4_0")
MARGIN = 20              # seconds kept back from the deadline for the last writes and the log archive
MIN_START = 15           # a step is not started with less time left than this (3 s in the CPU smoke)


class StepTimeout(Exception):
    pass


class Skip(Exception):
    """A step that cannot run here (no ncu, no compute-sanitizer): recorded as skipped with the reason."""


class Terminated(BaseException):
    pass


def atomic_write(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def on_alarm(signum, frame):
    raise StepTimeout("step cap reached")


def on_term(signum, frame):
    raise Terminated(f"signal {signum}")


def die_with_parent():
    """In the child: SIGKILL when this script dies (even by SIGKILL), so no CLI outlives a killed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def kill_group(p):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            pass


# What a step needs to have run before it in this process (Step.model); an --only plan adds the model step when it is missing.
MODEL_DIR = "dir"        # the saved model directory (results' model_dir; the demo model in the CPU smoke)
TORCH_MODEL = "torch"    # the transformers model in this process's memory


@dataclass(frozen=True)
class Step:
    """One step of the run, declared once in STEPS. fn(run, res) fills res, the step's entry in results.json, as it goes
    (a dict it returns is added to res), raises Skip when it cannot run here, StepTimeout when its time is up."""
    name: str
    cap: int                          # seconds on a GPU
    smoke_cap: Optional[int]          # seconds in the CPU smoke (--smoke-cap overrides); None: left out of the smoke
    fn: Callable
    torch: bool = False               # imports torch (needs a GPU machine); in the smoke only with a smoke_fn
    smoke_fn: Optional[Callable] = None  # what runs instead of fn in the CPU smoke
    model: Optional[str] = MODEL_DIR  # MODEL_DIR, TORCH_MODEL or None: what must exist first (see Run.needs)
    reference: bool = False           # needs the transformers reference logits (work/ref_logits.npy)
    planned: bool = True              # in the default run; False: only when named in --only (the diagnosis steps)

    @property
    def in_smoke(self):
        return self.smoke_cap is not None and (not self.torch or self.smoke_fn is not None)


class Run:
    """One run of the check: its arguments, its results (what results.json holds), the deadline, the running step's
    end and the CLI children still alive. Every step gets it; nothing else carries state between steps."""

    def __init__(self, args, t0):
        self.args = args
        self.t0 = t0                 # the script's start (log times, elapsed_s)
        self.smoke = bool(args.cpu_smoke)
        self.dev = "cpu" if self.smoke else "cuda"
        self.results = {"steps": {}, "status": {}, "errors": {}}
        self.deadline = args.deadline_at if args.deadline_at else t0 + args.deadline  # absolute time by which everything is written
        self.step_end = None         # absolute end of the running step (its cap or the deadline, whichever is first)
        self.children = set()        # CLI processes (each the leader of its own process group) still running
        self.model = None            # the bf16 transformers model (GPU, once the model step has run in this process)
        self.ref32 = None            # its fp32 reference, loaded from the saved directory

    def log(self, msg):
        print(f"[{time.time() - self.t0:6.1f}s] {msg}", flush=True)

    def save(self):
        """results.json, summary.json and results.md as they stand now (called after every CLI call and step)."""
        out = Path(self.args.out)
        atomic_write(out / "results.json", json.dumps(self.results, indent=1, default=str))
        try:
            summ = summary(self)
        except Exception as e:  # a summary bug must not lose the run
            summ = {"summary_error": f"{type(e).__name__}: {e}", "steps": step_table(self.results)}
        atomic_write(out / "summary.json", json.dumps(summ, indent=1, default=str))
        try:
            atomic_write(out / "results.md", markdown(self, summ))
        except Exception as e:
            self.log(f"results.md not written: {type(e).__name__}: {e}")

    def cap(self, step):
        """The step's cap in seconds here: on a GPU, or in the CPU smoke (--smoke-cap when given)."""
        if not self.smoke:
            return step.cap
        return self.args.smoke_cap if self.args.smoke_cap is not None else step.smoke_cap

    def run_step(self, step):
        """Runs one step within min(its cap, the time to the deadline - MARGIN) and records its status, seconds and error."""
        name = step.name
        status_of = self.results["status"]
        now = time.time()
        cap = self.cap(step)
        left = self.deadline - now - MARGIN
        min_start = MIN_START if not self.smoke else 3
        if left < min(min_start, cap):
            status_of[name] = {"status": "skipped (deadline)", "seconds": 0, "cap_s": cap}
            self.log(f"--- {name}: skipped (deadline, {left:.0f}s left)")
            self.save()
            return
        budget = min(cap, left)
        self.step_end = now + budget
        res = {}
        self.results["steps"][name] = res  # steps fill it as they go, so a timeout keeps what finished
        self.results["errors"].pop(name, None)
        status_of[name] = {"status": "running", "seconds": None, "cap_s": round(budget)}
        self.save()
        self.log(f"--- {name} (cap {budget:.0f}s)")
        status, err = "ok", None
        signal.setitimer(signal.ITIMER_REAL, budget + 10)  # Python-side work (torch); CLI calls time out first
        try:
            r = (step.smoke_fn if self.smoke and step.smoke_fn else step.fn)(self, res)
            if isinstance(r, dict):
                res.update(r)
        except StepTimeout as e:
            status, err = "timeout", str(e)
        except Skip as e:
            status, err = "skipped", str(e)
        except Terminated as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            status_of[name] = {"status": "killed", "seconds": round(time.time() - now, 1), "cap_s": round(budget)}
            self.results["errors"][name] = f"killed by {e}"
            raise
        except Exception as e:  # record and go on
            status, err = "failed", f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.step_end = None
        status_of[name] = {"status": status, "seconds": round(time.time() - now, 1), "cap_s": round(budget)}
        if err:
            self.results["errors"][name] = err
        self.log(f"{name}: {status} in {time.time() - now:.1f}s" + (f" ({err})" if err else ""))
        self.save()

    def spawn(self, cmd, name, cwd=None):
        """Starts cmd in its own process group with stdout/stderr in the log folder."""
        logs = Path(self.args.logs)
        so = open(logs / f"{name}.stdout.txt", "w")
        se = open(logs / f"{name}.stderr.txt", "w")
        p = subprocess.Popen(cmd, stdout=so, stderr=se, stdin=subprocess.DEVNULL, cwd=cwd or self.args.work,
                             env=dict(os.environ, **self.args.child_env), start_new_session=True, preexec_fn=die_with_parent)
        so.close()
        se.close()
        self.children.add(p)
        return p

    def kill_children(self):
        for p in list(self.children):
            kill_group(p)

    def time_left(self, timeout):
        """timeout, or less when the running step ends sooner."""
        limit = timeout
        if self.step_end is not None:
            limit = min(limit, self.step_end - time.time())
        return limit

    def run_cmd(self, name, cmd, timeout):
        """Runs cmd (its own process group) for at most timeout seconds or what the step has left; returns (exit, stdout, stderr)."""
        limit = self.time_left(timeout)
        if limit < 1:
            raise StepTimeout(f"{name}: no time left in the step")
        t = time.time()
        p = self.spawn(cmd, name)
        try:
            rc = p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"{name} killed after {limit:.0f}s")
        finally:
            if p.poll() is None:
                kill_group(p)
            self.children.discard(p)
        logs = Path(self.args.logs)
        out = (logs / f"{name}.stdout.txt").read_text(errors="replace")
        err = (logs / f"{name}.stderr.txt").read_text(errors="replace")
        shown = " ".join(a if len(a) < 60 else a[:57] + "..." for a in cmd)[-300:]
        self.log(f"  {name}: {shown} -> exit {rc} in {time.time() - t:.1f}s")
        tail = "\n".join(err.strip().splitlines()[-6:])
        if tail:
            print("    " + tail.replace("\n", "\n    "), flush=True)
        return rc, out, err

    def cli(self, name, args, timeout=600, parse_json=True, prefix=(), check=True):
        """Runs ilgpu-llama (logs kept in the log folder), returns parsed JSON stdout."""
        rc, out, err = self.run_cmd(name, list(prefix) + self.args.cli_cmd + list(args), timeout)
        tail = "\n".join(err.strip().splitlines()[-6:])
        if check and rc != 0 and not (parse_json and out.strip().startswith("{")):
            raise RuntimeError(f"{name}: exit {rc}: {tail}")
        try:
            self.save()
        except Exception:
            pass
        if not parse_json:
            return {"exit": rc, "stdout": out[-4000:]}
        return json.loads(out)

    def has_model_dir(self):
        d = self.results.get("model_dir")
        return bool(d) and Path(d).exists()

    def model_dir(self):
        if not self.has_model_dir():
            raise RuntimeError("no model: the model step has not run (or its directory is gone)")
        return self.results["model_dir"]

    def demo_dir(self):
        """The built-in demo model, written by a first generate into the work folder's weights/."""
        d = Path(self.args.work) / "weights" / "demo-tiny-llama3"
        if not (d / "config.json").exists():
            self.cli("demo_model", ["generate", "--max-new-tokens", "1", "--device", "cpu", "--temperature", "0"], 300, parse_json=False)
        return str(d)

    def best_variant(self):
        """The decode variant with the highest batch-1 tok/s in decode_variants (baseline if that step has no figure)."""
        per = {v: next((r["tokens_per_second"] for r in rep.get("rows", []) if r["test"].startswith("tg") and r["batch"] == 1), 0)
               for v, rep in (self.results["steps"].get("decode_variants") or {}).items() if isinstance(rep, dict)}
        return max(per, key=per.get) if per else "baseline"

    def e2e(self, name, extra, timeout=200):
        return self.cli(name, ["bench", "e2e", "--model", self.model_dir(), "--device", self.dev, "--json"] + extra, timeout)

    def needs(self, step):
        """Steps a step needs in this process (an --only rerun on a fresh machine rebuilds the model first)."""
        if step.model is None:
            return []
        if self.smoke:
            return ["model"] if not self.has_model_dir() else []
        out = []
        if (step.model == TORCH_MODEL and self.model is None) or not self.has_model_dir():
            out.append("model")
        if step.reference and not (Path(self.args.work) / "ref_logits.npy").exists():
            out += ["model", "reference"] if self.model is None else ["reference"]
        return list(dict.fromkeys(out))

    def plan(self, wanted, skip):
        """wanted in order, each after the steps it needs that are not wanted themselves, less skip and (in the CPU smoke)
        the steps left out of it."""
        plan = []
        for name in wanted:
            for dep in self.needs(STEP[name]):
                if dep not in plan and dep not in wanted:
                    plan.append(dep)
            plan.append(name)
        return [n for n in plan if n not in skip and (not self.smoke or STEP[n].in_smoke)]


def tokens_arg(rows):
    out = []
    for row in rows:
        out += ["--tokens", ",".join(map(str, row))]
    return out


def smoke_tokens(n, seed=0):
    return [(37 * i + 11 * seed + 5) % 500 + 1 for i in range(n)]


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# 1. model

ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}
BASE = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
            rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000,
            eos_token_id=[128001, 128008, 128009], hidden_act="silu", attention_bias=False, mlp_bias=False,
            initializer_range=0.02)


def expected_inv_freq():
    import numpy as np
    dim, theta = 64, 500000.0
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    low_wl = ROPE["original_max_position_embeddings"] / ROPE["low_freq_factor"]
    high_wl = ROPE["original_max_position_embeddings"] / ROPE["high_freq_factor"]
    wl = 2 * math.pi / inv
    out = np.where(wl > low_wl, inv / ROPE["factor"], inv)
    smooth = (ROPE["original_max_position_embeddings"] / wl - ROPE["low_freq_factor"]) / (ROPE["high_freq_factor"] - ROPE["low_freq_factor"])
    mid = (1 - smooth) * inv / ROPE["factor"] + smooth * inv
    is_mid = (wl <= low_wl) & (wl >= high_wl)
    return np.where(is_mid, mid, out)


def make_config(variant, **overrides):
    from transformers import LlamaConfig
    base = dict(BASE, **overrides)
    if variant == "rope_scaling":
        return LlamaConfig(rope_theta=500000.0, rope_scaling=dict(ROPE), **base)
    return LlamaConfig(rope_parameters=dict(ROPE, rope_theta=500000.0), **base)


def build_model(run):
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(run.args.seed)
    model, used = None, None
    for variant in ("rope_scaling", "rope_parameters"):
        try:
            cfg = make_config(variant)
            with torch.device("cuda"):
                m = LlamaForCausalLM(cfg)
            inv = m.model.rotary_emb.inv_freq.detach().double().cpu().numpy()
            err = float(np.max(np.abs(inv - expected_inv_freq()) / expected_inv_freq()))
            run.log(f"config via {variant}: llama3 inv_freq max rel error {err:.2e}")
            if err < 1e-5:
                model, used = m, variant
                break
            del m
        except Exception as e:
            run.log(f"config via {variant} failed: {e}")
    if model is None:
        raise RuntimeError("could not build a config whose RoPE matches llama3 scaling")
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    # Peak the distribution: with tied embeddings, logit scale is proportional to the embedding
    # scale (the final RMSNorm removes the hidden state's own scale). Measure, rescale once, measure.
    prompt = torch.randint(0, 128256, (1, run.args.prompt_len), generator=torch.Generator().manual_seed(run.args.seed + 1)).cuda()

    def spread():
        with torch.no_grad():
            logits = model(prompt).logits[0].float()
        top2 = torch.topk(logits, 2, dim=-1).values
        return float(logits.std(dim=-1).mean()), float((top2[:, 0] - top2[:, 1]).median())

    std0, margin0 = spread()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(run.args.target_logit_std / std0)
    std1, margin1 = spread()
    run.log(f"logit std {std0:.3f} -> {std1:.3f}, median top-1/top-2 margin {margin0:.3f} -> {margin1:.3f}")

    model_dir = Path(run.args.work) / "llama-3.2-1b-random"
    model.save_pretrained(model_dir, safe_serialization=True)
    # The fp32 reference is loaded from the saved directory, as a user would load it. Converting
    # the bf16 model in place with .float() would not do: nn.Module.to(bfloat16) also rounds the
    # rotary inv_freq buffer to bf16 (0.4% frequency error, a RoPE angle error growing with
    # position), and converting back does not restore it.
    from transformers import LlamaForCausalLM as _L
    try:
        ref = _L.from_pretrained(model_dir, dtype=torch.float32)
    except TypeError:
        ref = _L.from_pretrained(model_dir, torch_dtype=torch.float32)
    ref = ref.cuda().eval()
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    exp_inv = expected_inv_freq()
    inv_ref = ref.model.rotary_emb.inv_freq.detach().double().cpu().numpy()
    inv_bf16 = model.model.rotary_emb.inv_freq.detach().double().cpu().numpy()
    inv_check = {"reference_fp32_max_rel_error": float(np.max(np.abs(inv_ref - exp_inv) / exp_inv)),
                 "bf16_converted_model_max_rel_error": float(np.max(np.abs(inv_bf16 - exp_inv) / exp_inv))}
    run.log(f"rotary inv_freq vs llama3 formula: {inv_check}")
    run.ref32 = ref
    cfg_json = json.loads((model_dir / "config.json").read_text())
    files = sorted(p.name for p in model_dir.iterdir())
    run.results["model_dir"] = str(model_dir)
    run.model = model
    return {"config_variant": used, "inv_freq_check": inv_check, "logit_std_before": std0, "logit_std": std1, "median_margin_before": margin0,
            "median_margin": margin1, "files": files, "config_json": cfg_json,
            "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# 2. transformers reference

def prompts(run):
    import torch
    g = torch.Generator().manual_seed(run.args.seed + 2)
    body = torch.randint(0, 128000, (4, run.args.prompt_len - 1), generator=g)
    bos = torch.full((4, 1), 128000, dtype=torch.long)
    return torch.cat([bos, body], dim=1)


def hf_generate(model, ids, new_tokens):
    import torch
    ids = ids.cuda()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    return out[:, ids.shape[1]:].cpu().tolist()


def reference(run, res):
    """transformers fp32 greedy tokens (batch 1 and 4), logits and margins, kept in results' ref; res gets them only at the
    end, so a timeout leaves no half reference."""
    import numpy as np
    import torch
    p = prompts(run)
    ref = run.ref32  # fp32 reference loaded from the saved model (weights are exactly the bf16 values)
    ref_out = {"prompts": p.tolist()}
    ref_out["greedy_b1"] = hf_generate(ref, p[:1], run.args.new_tokens)[0]
    ref_out["greedy_b4"] = hf_generate(ref, p, run.args.new_tokens)
    # fp32 logits of every position of prompt + greedy tokens, and the per-step margins
    margins = []
    for i in range(4):
        seq = p[i].tolist() + ref_out["greedy_b4"][i]
        with torch.no_grad():
            logits = ref(torch.tensor([seq], device="cuda")).logits[0].float()
        top2 = torch.topk(logits, 2, dim=-1).values
        m = (top2[:, 0] - top2[:, 1]).cpu().numpy()
        margins.append([float(x) for x in m[run.args.prompt_len - 1: run.args.prompt_len - 1 + run.args.new_tokens]])
        if i == 0:
            full = p[0].tolist() + ref_out["greedy_b1"]
            with torch.no_grad():
                l1 = ref(torch.tensor([full], device="cuda")).logits[0].float().cpu().numpy()
            np.save(Path(run.args.work) / "ref_logits.npy", l1.astype(np.float32))
            ref_out["logits_tokens"] = full
            top2b = np.sort(l1, axis=-1)[:, -2:]
            ref_out["margins_b1"] = [float(x) for x in (top2b[:, 1] - top2b[:, 0])[run.args.prompt_len - 1: run.args.prompt_len - 1 + run.args.new_tokens]]
    ref_out["margins_b4"] = margins
    ref_out["b1_equals_b4_row0"] = ref_out["greedy_b1"] == ref_out["greedy_b4"][0]
    torch.cuda.empty_cache()
    run.results["ref"] = ref_out
    return {k: v for k, v in ref_out.items() if k not in ("logits_tokens",)}


def reference_variants(run, res):
    """Two more references for the same tokens, to separate our error from the reference's own:
    float64 (what fp32 itself deviates from), and fp32 with K and V rounded to fp16 after RoPE
    exactly where ilgpu-llama's cache rounds them (isolates the fp16 KV cache's effect)."""
    import numpy as np
    import torch
    ref = run.ref32
    toks = torch.tensor([run.results["ref"]["logits_tokens"]], device="cuda")
    out = {}
    m64 = ref.double()
    with torch.no_grad():
        np.save(Path(run.args.work) / "ref64_logits.npy", m64(toks).logits[0].float().cpu().numpy())
    out["fp64"] = "ok"
    m32 = ref.float()
    np.save(Path(run.args.work) / "ref_fp16kv_logits.npy", fp16kv_logits(m32, toks))
    out["fp16kv"] = "ok"
    torch.cuda.empty_cache()
    w = Path(run.args.work)
    pairs = [("hf_fp32_vs_fp64", "ref_logits.npy", "ref64_logits.npy"), ("ours_vs_fp64", "ours_prefill.npy", "ref64_logits.npy"),
             ("ours_vs_hf_fp16kv", "ours_prefill.npy", "ref_fp16kv_logits.npy"), ("hf_fp16kv_vs_fp32", "ref_fp16kv_logits.npy", "ref_logits.npy")]
    for name, a, b in pairs:
        if (w / a).exists() and (w / b).exists():
            r = run.cli(f"compare_{name}", ["compare-logits", "--ours", str(w / a), "--reference", str(w / b), "--json"], 120)
            r.pop("disagreements", None)
            out[name] = r
    return out


def fp16kv_logits(model, toks):
    """fp32 logits with K and V rounded to fp16 after RoPE, as ilgpu-llama's cache does."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def fp16kv(module, query, key, value, attention_mask, **kwargs):
        return sdpa_attention_forward(module, query, key.half().float(), value.half().float(), attention_mask, **kwargs)

    AttentionInterface.register("fp16kv", fp16kv)
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation("fp16kv")
    except Exception:
        model.config._attn_implementation = "fp16kv"
    with torch.no_grad():
        out = model(toks).logits[0].float().cpu().numpy()
    try:
        model.set_attn_implementation(previous)
    except Exception:
        model.config._attn_implementation = previous
    return out


def random_variant(run, name, cfg):
    """A 160-token random sequence and a random model for cfg (embedding scaled to the target logit
    std), saved to work/name; returns (directory, tokens, fp32-with-fp16-KV logits, fp32 logits)."""
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(run.args.seed)
    with torch.device("cuda"):
        m = LlamaForCausalLM(cfg)
    m = m.to(torch.bfloat16).eval()
    toks = torch.randint(0, cfg.vocab_size, (1, 160), generator=torch.Generator().manual_seed(run.args.seed + 5)).cuda()
    with torch.no_grad():
        std0 = float(m(toks).logits[0].float().std(dim=-1).mean())
        m.model.embed_tokens.weight.mul_(run.args.target_logit_std / std0)
    d = Path(run.args.work) / name
    m.save_pretrained(d, safe_serialization=True)
    del m
    torch.cuda.empty_cache()
    # fresh fp32 load: an in-place .float() would keep the bf16-rounded rotary inv_freq
    ref = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).cuda().eval()
    kv16 = fp16kv_logits(ref, toks)
    with torch.no_grad():
        f32 = ref(toks).logits[0].float().cpu().numpy()
    del ref
    torch.cuda.empty_cache()
    return d, toks[0].tolist(), kv16, f32


def per_position(a, b):
    import numpy as np
    e = np.abs(a - b).max(axis=-1)
    idx = [i for i in (0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 159) if i < len(e)]
    return {str(i): round(float(e[i]), 4) for i in idx}


def diagnose(run, res):
    """Bisects the difference to transformers: the golden tiny model on CUDA and on the CPU
    accelerator; small random models that each change one dimension of the 1B config, on both
    devices, against transformers fp32 with the same fp16 KV rounding; per-position error."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    w = Path(run.args.work)
    out = {}
    # golden tiny model on CUDA vs its float64 reference (the tests check the CPU accelerator)
    golden = Path.cwd() / "tests" / "fixtures" / "tiny-llama3"
    case = json.loads((golden / "golden.json").read_text())["cases"][2]
    gt = ",".join(map(str, case["prompt"] + case["greedy_16"]))
    for dev in ("cuda", "cpu"):
        f = w / f"golden_{dev}.npy"
        run.cli(f"golden_logits_{dev}", ["logits", "--model", str(golden), "--tokens", gt, "--out", str(f), "--device", dev], 180, parse_json=False)
        r = run.cli(f"golden_compare_{dev}", ["compare-logits", "--ours", str(f), "--reference", str(golden / case["logits_file"]), "--json"], 60)
        out[f"golden_{dev}"] = {"max_abs_error": r["max_abs_error"], "top1": f"{r['all_top1_agreement']}/{r['positions']}"}
    # 1B: error per position, ours vs transformers with fp16 KV
    if (w / "ours_prefill.npy").exists() and (w / "ref_fp16kv_logits.npy").exists():
        out["1b_per_position"] = per_position(np.load(w / "ours_prefill.npy"), np.load(w / "ref_fp16kv_logits.npy"))
    # 1B with bf16 weights on the device (no fp16 conversion at all)
    f = w / "ours_bf16.npy"
    run.cli("logits_bf16", ["logits", "--model", run.results["model_dir"], "--tokens", ",".join(map(str, run.results["ref"]["logits_tokens"])), "--out", str(f),
                            "--device", "cuda", "--dtype", "bf16", "--max-seq-len", "512"], 120, parse_json=False)
    if (w / "ref_fp16kv_logits.npy").exists():
        out["1b_bf16_weights"] = per_position(np.load(f), np.load(w / "ref_fp16kv_logits.npy"))
    variants = {
        "1b_2_layers": dict(num_hidden_layers=2),
        "small_hd64": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=64, vocab_size=1024, bos_token_id=1, eos_token_id=[2]),
        "small_hd16": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=16, vocab_size=1024, bos_token_id=1, eos_token_id=[2]),
        "small_hd64_16_layers": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=16, num_attention_heads=4, num_key_value_heads=1, head_dim=64, vocab_size=1024, bos_token_id=1, eos_token_id=[2]),
    }
    for name, ov in variants.items():
        t = time.time()
        d, toks, ref, ref32 = random_variant(run, f"variant_{name}", make_config(run.results["steps"]["model"]["config_variant"], **ov))
        entry = {"fp16kv_vs_fp32": per_position(ref, ref32)}
        for dev in (("cuda", "cpu") if name.startswith("small") else ("cuda",)):
            f = w / f"variant_{name}_{dev}.npy"
            run.cli(f"variant_{name}_{dev}", ["logits", "--model", str(d), "--tokens", ",".join(map(str, toks)), "--out", str(f),
                                              "--device", dev, "--max-seq-len", "512"], 240, parse_json=False)
            entry[dev] = per_position(np.load(f), ref)
        out[name] = entry
        run.log(f"  variant {name}: {json.dumps(entry)} ({time.time() - t:.1f}s)")
    return out


def bisect(run, res):
    """Variants between a small model that matches transformers and the 1B shape that does not,
    changing one dimension at a time (CUDA only, 2 layers, fp16-KV transformers reference)."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    w = Path(run.args.work)
    out = {}
    small = dict(bos_token_id=1, eos_token_id=[2])
    variants = {
        "1b": dict(num_hidden_layers=2),
        "1b_vocab1024": dict(num_hidden_layers=2, vocab_size=1024, **small),
        "1b_inter512": dict(num_hidden_layers=2, intermediate_size=512),
        "1b_heads4_kv1": dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1),
        "1b_kv32": dict(num_hidden_layers=2, num_key_value_heads=32),
        "1b_init0.007": dict(num_hidden_layers=2, initializer_range=0.007),
        "h256_heads32_kv8": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, vocab_size=1024, **small),
        "1b_no_rope_scaling": "no_rope_scaling",
    }
    for name, ov in variants.items():
        t = time.time()
        if ov == "no_rope_scaling":
            from transformers import LlamaConfig
            cfg = LlamaConfig(rope_theta=500000.0, **dict(BASE, num_hidden_layers=2))
        else:
            cfg = make_config("rope_scaling", **ov)
        d, toks, ref, _ = random_variant(run, f"bisect_{name}", cfg)
        f = w / f"bisect_{name}.npy"
        run.cli(f"bisect_{name}", ["logits", "--model", str(d), "--tokens", ",".join(map(str, toks)), "--out", str(f), "--device", "cuda", "--max-seq-len", "512"], 120, parse_json=False)
        out[name] = per_position(np.load(f), ref)
        run.log(f"  {name}: {json.dumps(out[name])} ({time.time() - t:.1f}s)")
    return out


def hf_timing(run, res):
    import torch
    model = run.model
    p = prompts(run)
    out = {}
    for b in (1, 4):
        ids = p[:b].cuda()
        hf_generate(model, ids, 8)  # warm-up
        torch.cuda.synchronize()
        t = time.time()
        hf_generate(model, ids, run.args.new_tokens)
        torch.cuda.synchronize()
        dt = time.time() - t
        out[f"batch{b}"] = {"seconds": dt, "new_tokens": b * run.args.new_tokens, "tokens_per_second": b * run.args.new_tokens / dt,
                            "ms_per_step": dt * 1000 / run.args.new_tokens}
        run.log(f"transformers bf16 eager generate batch {b}: {b * run.args.new_tokens / dt:.1f} tok/s ({dt * 1000 / run.args.new_tokens:.2f} ms/step)")
    return out


def copy_bandwidth(run, res):
    import torch
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    times.sort()
    t = times[len(times) // 2]
    del a, b
    torch.cuda.empty_cache()
    return {"bytes": n, "seconds": t, "gb_per_s_read_plus_write": 2 * n / t / 1e9}


# ---------------------------------------------------------------------------------------------
# 3. ilgpu-llama

def first_divergence(ours, ref, margins, tol):
    for k, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            return {"step": k, "ours": a, "reference": b, "reference_margin": margins[k] if k < len(margins) else None,
                    "near_tie": (margins[k] < 2 * tol) if (tol is not None and k < len(margins)) else None}
    return None



# ---------------------------------------------------------------------------------------------
# 3. ilgpu-llama (every step takes the run and the dict it fills as it goes)

def info(run, res):
    res.update(run.cli("info", ["info", "--json"], 60))


def smoke_model(run, res):
    """--cpu-smoke: the built-in demo model stands in for the 1B model."""
    run.results["model_dir"] = run.demo_dir()
    res["model_dir"] = run.results["model_dir"]


def decode_variants(run, res):
    """tg128 after a 16-token prompt at batch 1 and 4, every decode variant, 2 repeats: the decisive numbers."""
    for v in (VARIANTS if not run.smoke else VARIANTS[-1:]):
        r = run.e2e(f"bench_e2e_{v}", ["--prompt-tokens", "16", "--gen-tokens", str(run.args.tg), "--batches", "1,4" if not run.smoke else "1",
                                       "--max-batch-size", "4" if not run.smoke else "1",
                                       "--repeats", str(run.args.decode_repeats), "--decode-variant", v])
        res[v] = r
        tg = {x["batch"]: x for x in r["rows"] if x["test"].startswith("tg")}
        run.log(f"  {v}: " + ", ".join(f"b{b} {x['tokens_per_second']:.1f} tok/s ({x['ms_per_step']:.3f} ms/step, {x['launches_per_step']} launches)" for b, x in sorted(tg.items())))


def kernels_matvec(run, res):
    """The matvec kernels (fp16 and the quantised formats), launches timed back to back so the launch floor does not hide bandwidth."""
    shapes = ["--shapes", "tiny", "--repeats", "2", "--warmup", "0", "--filter", "matvec* b1"] if run.smoke else \
        ["--shapes", "llama-3.2-1b", "--repeats", "50", "--warmup", "5", "--filter", "matvec*"]
    # A mix (q4_k_m) is no single kernel format: its kernels are q4_k's and q6_k's.
    for f in (("fp16",) if run.smoke else ("fp16",) + tuple(f for f in QUANT_FORMATS if not f.endswith("_m"))):
        plot = ["--plot", str(Path(run.args.out) / "roofline.png")] if f == "fp16" and not run.smoke else []
        res[f] = run.cli(f"bench_kernels_matvec_{f}", ["bench", "kernels", "--device", run.dev, "--dtype", f, "--back-to-back", "--json"] + shapes + plot, 200)


def decode_quant(run, res):
    """The block formats (quantised at load: Q8_0, the K-quants, Q4_0) decode at batch 1 with the winning variant."""
    v = run.best_variant()
    for f in (QUANT_FORMATS if not run.smoke else QUANT_FORMATS[-1:]):
        r = run.e2e(f"bench_e2e_{f}", ["--dtype", f, "--prompt-tokens", "16", "--gen-tokens", str(run.args.tg), "--batches", "1", "--max-batch-size", "1",
                                       "--repeats", str(run.args.decode_repeats), "--decode-variant", v])
        r["variant"] = v
        res[f] = r


def evaluation(run, res):
    """The evaluation configuration (--dtype bf16 --kv-cache-dtype fp32 --accumulate fp64): the golden model's logits,
    prefill and decode, against its float64 reference (tests/fixtures/tiny-llama3; issue 22: log-probabilities within
    1e-4), and on a GPU what float64 sums cost: the model's batch-1 decode with an fp32 cache, fp32 vs fp64 sums."""
    golden = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tiny-llama3"
    case = json.loads((golden / "golden.json").read_text())["cases"][0]
    toks = ",".join(map(str, case["prompt"] + case["greedy_16"]))
    for mode in ("prefill", "decode"):
        npy = Path(run.args.work) / f"golden_fp64_{mode}.npy"
        run.cli(f"golden_fp64_{mode}", ["logits", "--model", str(golden), "--tokens", toks, "--device", run.dev, "--out", str(npy), "--mode", mode,
                                        "--dtype", "bf16", "--kv-cache-dtype", "fp32", "--accumulate", "fp64", "--max-seq-len", "64"], 120, parse_json=False)
        r = run.cli(f"compare_golden_fp64_{mode}", ["compare-logits", "--ours", str(npy), "--reference", str(golden / "logits_case0.npy"), "--json"], 60)
        r.pop("disagreements", None)
        r["within_1e-4"] = r.get("max_logprob_error") is not None and r["max_logprob_error"] < 1e-4
        res[f"golden_{mode}"] = r
    res["golden_within_1e-4"] = all(res[f"golden_{m}"]["within_1e-4"] for m in ("prefill", "decode"))
    if run.smoke:
        return
    for acc in ("fp32", "fp64"):
        res[f"decode_bf16_fp32kv_{acc}"] = run.e2e(f"bench_e2e_eval_{acc}", ["--dtype", "bf16", "--kv-cache-dtype", "fp32", "--accumulate", acc, "--prompt-tokens", "128",
                                                                          "--gen-tokens", str(run.args.tg), "--batches", "1", "--max-batch-size", "1",
                                                                          "--repeats", str(run.args.decode_repeats)])


def logits(run, res):
    """Logits of every variant (decode path) and format (winning variant) against transformers fp32, and prefill vs decode.
    In the CPU smoke (no transformers) the reference is our own prefill logits, which checks the commands and flags only."""
    w = Path(run.args.work)
    ref = run.results.get("ref")
    toks = ",".join(map(str, ref["logits_tokens"] if ref else smoke_tokens(24)))
    common = ["logits", "--model", run.model_dir(), "--tokens", toks, "--device", run.dev, "--max-seq-len", "512"]
    prefill = w / "ours_prefill.npy"
    run.cli("logits_prefill", common + ["--out", str(prefill), "--mode", "prefill"], 240, parse_json=False)
    reference = w / "ref_logits.npy" if ref else prefill

    def compare(key, a, b):
        r = run.cli(f"compare_{key}", ["compare-logits", "--ours", str(a), "--reference", str(b), "--json"], 120)
        if len(r.get("disagreements", [])) > 20:
            r.pop("disagreements")
        res[key] = r

    if ref:
        compare("prefill", prefill, reference)
    runs = [(v, "fp16") for v in (VARIANTS if not run.smoke else [])]
    win = run.best_variant()
    runs += [(win, f) for f in (("bf16",) + QUANT_FORMATS if not run.smoke else ("q4_0",))]
    for v, f in runs:
        key = f"decode_{v}" if f == "fp16" else f"decode_{f}"
        npy = w / f"ours_{key}.npy"
        run.cli(f"logits_{key}", common + ["--out", str(npy), "--mode", "decode", "--decode-variant", v, "--dtype", f], 240, parse_json=False)
        compare(key, npy, reference)
        if (v == "baseline" and f == "fp16") or (run.smoke and "prefill_vs_decode" not in res):
            compare("prefill_vs_decode", prefill, npy)
    errs = [res[k]["max_abs_error"] for k in ("prefill", "decode_baseline") if k in res]
    if errs and ref:
        run.results["logit_tolerance"] = max(errs)


SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck")


def find_tool(name):
    return shutil.which(name) or next((str(p) for pat in (f"/usr/local/cuda*/bin/{name}", f"/opt/nvidia/*/{name}", f"/opt/nvidia/*/*/{name}")
                                       for p in sorted(Path("/").glob(pat.lstrip("/")))), None)


AT = re.compile(r"\bat\s+(?:(0x[0-9a-f]+)\s+in\s+)?(.+?)(\+0x[0-9a-f]+)?(?:\s+in\s+(\S+))?(?:\s+\[.*\])?\s*$")


def at_fields(m):
    """(kernel, location) of an "at" match: FILE:LINE when the PTX carried line information, else the SASS offset."""
    return m.group(2).strip(), m.group(4) or (m.group(3) or "").lstrip("+") or m.group(1)


def parse_sanitizer(text):
    """compute-sanitizer output -> {"errors": N or None, "findings": [{message, kernel, location, count}]}, one entry per
    distinct (message, kernel, location) with how often it was reported. The kernel and location come from the first
    "at KERNEL+0xOFF in FILE:LINE" (or "at 0xOFF in KERNEL") line of a report, or from the report's own line (racecheck)."""
    findings, current, errors = {}, None, None

    def close():
        if current is not None:
            k = (re.sub(r"0x[0-9a-f]+", "0x?", current["message"]), current["kernel"], current["location"])
            if k in findings:
                findings[k]["count"] += 1
            else:
                findings[k] = dict(current, count=1)

    for raw in text.splitlines():
        if not raw.startswith("========="):
            continue
        line = raw[10:] if raw.startswith("========= ") else raw[9:]
        m = re.search(r"(ERROR SUMMARY):\s*(\d+)", line)
        if m:
            close()
            current = None
            errors = (errors or 0) + int(m.group(2))
            continue
        if not line.strip():
            close()
            current = None
            continue
        if not line.startswith(" "):  # the first line of a report
            close()
            if line.startswith(("COMPUTE-SANITIZER", "Program hit", "Saved host backtrace", "Target application returned", "RACECHECK SUMMARY", "LEAK SUMMARY")):
                current = None
                continue
            current = {"message": line.strip(), "kernel": None, "location": None}
            at = AT.search(line)
            if at and ("access at" in line or " at " in line):
                current["kernel"], current["location"] = at_fields(at)
            continue
        if current is not None and current["kernel"] is None:
            at = AT.match(line.strip()) if line.strip().startswith("at ") else None
            if at:
                current["kernel"], current["location"] = at_fields(at)
    close()
    return {"errors": errors, "findings": list(findings.values())}


def sanitizer(run, res):
    """compute-sanitizer memcheck, racecheck, synccheck (initcheck if time is left) over prefill and two decode steps
    of the demo model, batch 5 (one full tile of 4 and a partial one), every weight format, the winning variant.
    Without compute-sanitizer (CPU smoke) the same commands run unwrapped, to check them."""
    tool = find_tool("compute-sanitizer")
    demo = run.demo_dir()
    v = run.best_variant()
    res["variant"] = v
    res["tool_path"] = tool
    lengths = [5 + 3 * i for i in range(5)] if not run.smoke else [3] * 5
    args = ["generate", "--model", demo, "--device", run.dev, "--max-batch-size", "6", "--max-seq-len", "64", "--temperature", "0",
            "--ignore-eos", "--max-new-tokens", "3" if not run.smoke else "2", "--json", "--decode-variant", v] + \
        tokens_arg([smoke_tokens(n, i) for i, n in enumerate(lengths)])
    if tool is None:
        for f in (("q4_0",) if run.smoke else SANITIZER_FORMATS):
            j = run.cli(f"sanitizer_plain_{f}", args + ["--dtype", f], 120)
            res.setdefault("unwrapped", {})[f] = {"sequences": len(j["sequences"]), "kernel_launches": j.get("kernel_launches")}
        raise Skip("compute-sanitizer not found; the commands ran without it")
    tools = list(SANITIZER_TOOLS)
    for t in tools + ["initcheck"]:
        if t == "initcheck" and run.time_left(1e9) < 60:
            res["initcheck"] = {"skipped": "not enough time left in the step"}
            break
        for f in SANITIZER_FORMATS:
            logf = Path(run.args.logs) / f"sanitizer_{t}_{f}.log"
            prefix = [tool, "--tool", t, "--log-file", str(logf), "--print-limit", "30"]
            rc, _, err = run.run_cmd(f"sanitizer_{t}_{f}", prefix + run.args.cli_cmd + args + ["--dtype", f], 90)
            parsed = parse_sanitizer(logf.read_text(errors="replace") if logf.exists() else "")
            parsed["exit"] = rc
            if rc != 0:
                parsed["stderr_tail"] = "\n".join(err.strip().splitlines()[-4:])
            res.setdefault(t, {})[f] = parsed
            run.save()


def http_json(url, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def process_memory_mib(pid):
    """Device memory nvidia-smi attributes to pid (MiB), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return sum(int(b) for a, b in (l.split(",") for l in out.strip().splitlines() if "," in l) if int(a) == pid) or None
    except Exception:
        return None


def graph_cache(run, res):
    """serve with 8 slots: recorded CUDA graphs and device memory before and after 50 requests with different
    temperatures, top-k and batch shapes (waves of 1..8 concurrent requests). The cache must stay bounded."""
    slots = 8
    max_tokens = 6 if not run.smoke else 2
    demo = run.demo_dir()
    p = run.spawn(run.args.cli_cmd + ["serve", "--model", demo, "--device", run.dev, "--port", "0", "--max-batch-size", str(slots),
                                      "--max-seq-len", "128", "--decode-variant", run.best_variant()], "graph_cache_serve")
    try:
        errf = Path(run.args.logs) / "graph_cache_serve.stderr.txt"
        url = None
        while url is None:
            if p.poll() is not None:
                raise RuntimeError(f"serve exited {p.returncode}: {errf.read_text()[-500:]}")
            if run.time_left(1e9) < 5:
                raise StepTimeout("serve did not start in the step's time")
            m = re.search(r"listening on (http://\S+)", errf.read_text(errors="replace"))
            url = m.group(1).rstrip("/") if m else None
            time.sleep(0.3)
        res["url"] = url

        def one(i, temperature, top_k):
            try:
                body = {"prompt": f"Request {i}: the quick brown fox", "max_tokens": max_tokens, "temperature": temperature, "ignore_eos": True, "seed": i}
                if top_k is not None:
                    body["top_k"] = top_k
                r = http_json(url + "/v1/completions", body, timeout=max(5, run.time_left(120)))
                return r["usage"]["completion_tokens"] == max_tokens
            except Exception as e:
                run.log(f"  request {i}: {e}")
                return False

        one(-1, 0, None)  # warm-up: compile, greedy batch 1
        before = http_json(url + "/health")
        mem_before = process_memory_mib(p.pid)
        plan, i, modes = ([1, 2, 3, 5, 8, 4, 6, 7, 8, 1, 5], 0, set()) if not run.smoke else ([1, 3, 8], 0, set())
        total = sum(plan)
        ok = 0
        for width in plan:
            if i >= total:
                break
            batch = []
            for _ in range(width):
                temperature = 0.0 if i % 7 == 0 else round(0.05 + 0.037 * i, 3)
                top_k = None if i % 5 == 0 else 1 + (i * 7) % 60
                modes.add((temperature, top_k))
                batch.append((i, temperature, top_k))
                i += 1
            results = [None] * len(batch)
            threads = [threading.Thread(target=lambda k=k, a=a: results.__setitem__(k, one(*a))) for k, a in enumerate(batch)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok += sum(bool(x) for x in results)
        after = http_json(url + "/health")
        res.update({"requests": total, "ok": ok, "distinct_modes": len(modes), "slots": slots,
                    "graphs_before": before.get("graphs"), "graphs_after": after.get("graphs"),
                    "device_free_bytes_before": before.get("device_free_bytes"), "device_free_bytes_after": after.get("device_free_bytes"),
                    "allocated_bytes_before": before.get("allocated_bytes"), "allocated_bytes_after": after.get("allocated_bytes"),
                    "process_mib_before": mem_before, "process_mib_after": process_memory_mib(p.pid)})
        g = res["graphs_after"]
        # one greedy and one sampling graph per batch width is the most a bounded cache should hold
        res["bounded"] = None if g is None else g <= 2 * slots
        run.log(f"  graphs {res['graphs_before']} -> {g}, device free {res['device_free_bytes_before']} -> {res['device_free_bytes_after']}")
    finally:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
                p.wait(timeout=10)
            except Exception:
                pass
            kill_group(p)
        run.children.discard(p)


def decode_wide(run, res):
    """Decode past 4 sequences with the winning variant: tok/s at batch 8, 16 and 64 (the weights read once per step)."""
    v = run.best_variant()
    batches = "5" if run.smoke else "8,16,64"
    r = run.e2e("bench_e2e_wide", ["--max-batch-size", batches.split(",")[-1], "--batches", batches, "--prompt-tokens", "16" if not run.smoke else "4",
                                   "--gen-tokens", str(run.args.tg) if not run.smoke else "2", "--repeats", "1", "--decode-variant", v], 300)
    r["variant"] = v
    res.update(r)


def write_tokenizer(d, ranks=128000):
    """A tiktoken rank file with `ranks` byte tokens (256 single bytes, then every byte pair, then pair + byte), so that
    with Llama 3's 256 special tokens after them the tokenizer has exactly vocab_size 128256 ids and can print every id
    the random 1B model generates. Every multi-byte token is a lower-ranked token plus one byte (a valid BPE table)."""
    import base64
    lines, rank = [], 0
    for b in range(256):
        lines.append(base64.b64encode(bytes([b])).decode() + f" {rank}")
        rank += 1
    pairs = [bytes([a, b]) for a in range(256) for b in range(256)]
    for t in pairs:
        if rank >= ranks:
            break
        lines.append(base64.b64encode(t).decode() + f" {rank}")
        rank += 1
    for t in pairs:
        for b in range(256):
            if rank >= ranks:
                break
            lines.append(base64.b64encode(t + bytes([b])).decode() + f" {rank}")
            rank += 1
        if rank >= ranks:
            break
    (Path(d) / "tokenizer.model").write_text("\n".join(lines) + "\n")


def with_tokenizer(d):
    """serve needs a tokenizer that can print every id the model generates; the random 1B model has none, so a synthetic
    byte-level one of its exact size is written beside it (config vocab_size - 256 special tokens)."""
    if not any((Path(d) / n).exists() for n in ("tokenizer.json", "tokenizer.model", "original/tokenizer.model")):
        vocab = json.loads((Path(d) / "config.json").read_text())["vocab_size"]
        write_tokenizer(d, vocab - 256)
    return d


def serve(run, res):
    """bench serve against an in-process server (64 KV slots, the winning variant) at concurrency 1, 16 and 64."""
    levels, slots, extra = ("2", "2", ["--requests", "2"]) if run.smoke else ("1,16,64", "64", [])
    res.update(run.cli("bench_serve", ["bench", "serve", "--model", with_tokenizer(run.model_dir()), "--device", run.dev, "--max-batch-size", slots,
                                       "--concurrency", levels, "--max-tokens", str(run.args.tg), "--decode-variant", run.best_variant(), "--json"] + extra, 300))


def attention(run, res):
    """The attention kernel at 64, 1024, 8192 and 32768 keys (the shape set's decode cases)."""
    shapes = ["--shapes", "tiny", "--repeats", "1", "--warmup", "0"] if run.smoke else ["--shapes", "llama-3.2-1b"]
    res.update(run.cli("bench_kernels_attention", ["bench", "kernels", "--device", run.dev, "--filter", "attention*", "--json"] + shapes, 200))


def prefill(run, res):
    """pp512 at batch 1 with the winning variant."""
    r = run.e2e("bench_e2e_prefill", ["--prompt-tokens", str(run.args.pp), "--gen-tokens", "1", "--batches", "1", "--max-batch-size", "1",
                                      "--repeats", str(run.args.repeats), "--decode-variant", run.best_variant()], 200)
    r["variant"] = run.best_variant()
    res.update(r)


def greedy(run, res):
    """Greedy generation token by token against transformers fp32 at batch 1 and 4 for every variant (CUDA graph on),
    and the winner without graphs; in the CPU smoke, each variant against the baseline's tokens."""
    ref = run.results.get("ref")
    tol = run.results.get("logit_tolerance")
    p = ref["prompts"] if ref else [smoke_tokens(8, i) for i in range(4)]
    runs = [(v, b, []) for v in VARIANTS for b in (1, 4)]
    if not run.smoke:
        runs += [(run.best_variant(), b, ["--no-cuda-graph"]) for b in (1, 4)]
    else:
        runs = [(run.best_variant(), 2, [])]
    for v, b, extra in runs:
        key = f"{v}_b{b}" + ("_nograph" if extra else "")
        j = run.cli(f"generate_{key}", ["generate", "--model", run.model_dir(), "--temperature", "0", "--ignore-eos", "--max-new-tokens", str(run.args.new_tokens),
                                        "--json", "--device", run.dev, "--max-seq-len", "512", "--decode-variant", v] + extra + tokens_arg(p[:b]), 300)
        seqs = [s["generated_tokens"] for s in j["sequences"]]
        entry = {"variant": v, "batch": b, "cuda_graph": j["cuda_graph"], "decode_tokens_per_second": j["decode_tokens_per_second"],
                 "decode_ms_per_step": j["decode_ms_per_step"]}
        if ref:
            refs = [ref["greedy_b1"]] if b == 1 else ref["greedy_b4"]
            margins = [ref["margins_b1"]] if b == 1 else ref["margins_b4"]
            entry["identical"] = [a == r for a, r in zip(seqs, refs)]
            entry["first_divergence"] = [first_divergence(a, r, m, tol) for a, r, m in zip(seqs, refs, margins)]
        else:
            entry["tokens"] = seqs
            base = res.get("baseline_b4", {}).get("tokens")
            if base is not None:
                entry["same_as_baseline"] = seqs == base
        res[key] = entry


def memory(run, res):
    res.update(run.cli("memory_allocate", ["memory", "--model", run.model_dir(), "--allocate", "--device", run.dev, "--json"], 180))


def ncu(run, res):
    """Nsight Compute over one whole decode step of the winning variant (kernels launched one by one). The launch offset
    comes from the CLI's own counts: generate --json reports the kernel launches so far and the launches per decode step,
    so prefill's launches P = total - (steps x per step), and the third decode step starts at P + 2 x per step."""
    v = run.best_variant()
    prompt = run.results["ref"]["prompts"][0] if run.results.get("ref") else smoke_tokens(16)
    args = ["generate", "--model", run.model_dir(), "--temperature", "0", "--ignore-eos", "--device", run.dev, "--no-cuda-graph", "--json",
            "--max-seq-len", "512", "--decode-variant", v, "--tokens", ",".join(map(str, prompt))]
    counts = {}
    for n in ((4, 6) if not run.smoke else (4,)):
        j = run.cli(f"ncu_count_{n}", args + ["--max-new-tokens", str(n)], 120)
        counts[n] = (j["kernel_launches"], j["decode_launches_per_step"])
    per_step = counts[4][1]
    measured = (counts[6][0] - counts[4][0]) / 2 if 6 in counts else per_step  # one count in the smoke
    prefill_launches = counts[4][0] - 3 * per_step  # 4 new tokens: 1 from prefill, 3 decode steps
    res.update({"variant": v, "launches_per_step": per_step, "measured_launches_per_step": measured, "prefill_and_setup_launches": prefill_launches,
                "launch_skip": prefill_launches + 2 * per_step, "launch_count": per_step, "counts_agree": measured == per_step})
    if measured != per_step:
        raise RuntimeError(f"launch counts disagree: {measured} per step measured, {per_step} reported; the launch offset would be wrong")
    tool = find_tool("ncu")
    if not tool:
        raise Skip(f"ncu not found (launch skip {res['launch_skip']}, count {per_step} computed)")
    cmd = [tool, "--clock-control", "none", "--launch-skip", str(res["launch_skip"]), "--launch-count", str(per_step), "--section", "SpeedOfLight",
           "--section", "Occupancy", "--section", "LaunchStats", "--csv"] + run.args.cli_cmd + args + ["--max-new-tokens", "4"]
    rc, out, _ = run.run_cmd("ncu", cmd, 150)
    keep = {}
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split('","')]
        if len(cols) > 14 and cols[-3] in ("Duration", "Memory Throughput", "DRAM Throughput", "Achieved Occupancy", "Registers Per Thread", "Block Size", "Grid Size", "Compute (SM) Throughput"):
            keep.setdefault(f"{cols[0]}:{cols[4][:60]}", {})[cols[-3]] = f"{cols[-1]} {cols[-2]}"
    res.update({"exit": rc, "kernels": keep})



# ---------------------------------------------------------------------------------------------
# 4. summary.json: the figures docs/performance.md quotes, from whatever steps have run (missing: null)

MATVEC_ROWS = {  # summary key -> (plain kernel, fused-norm kernel, shape label start) at batch 1
    "qkv": ("matvec_qkv_rope_fp16", "matvec_qkv_rope_norm_fp16", None),
    "o": ("matvec_fp16", "matvec_fp16", "q/o proj"),
    "gate_up": ("matvec_swiglu_fp16", "matvec_swiglu_norm_fp16", None),
    "down": ("matvec_fp16", "matvec_fp16", "down proj"),
    "lm_head": ("matvec_fp16", "matvec_norm_fp16", "lm head"),
}


def step_table(results):
    return {k: dict(v, error=results["errors"].get(k)) for k, v in results["status"].items()}


def decode_of(report):
    out = {}
    for r in (report or {}).get("rows", []):
        if r["test"].startswith("tg"):
            out[str(r["batch"])] = {"tok_s": r["tokens_per_second"], "tok_s_stddev": r["tokens_per_second_std_dev"], "ms_per_step": r["ms_per_step"],
                                    "launches_per_step": r["launches_per_step"], "host_us_per_step": r["host_us_per_step"]}
    return out


def matvec_pct(report, fmt, fused):
    if not report:
        return None
    out = {}
    for key, (plain, normed, label) in MATVEC_ROWS.items():
        name = (normed if fused else plain).replace("_fp16", "_" + fmt)
        row = next((r for r in report.get("rows", []) if r["kernel"] == name and r["batch"] == 1 and (label is None or label in r["shape"])), None)
        out[key] = row["pct_copy_bandwidth"] if row else None
    return out


def logits_entry(r):
    return {k: r.get(k) for k in ("positions", "max_abs_error", "max_error_over_spread", "mean_kl_divergence", "all_top1_agreement", "passed") if k in r} if r else None


def summary(run):
    s = run.results["steps"]
    variants = {v: r for v, r in (s.get("decode_variants") or {}).items() if isinstance(r, dict) and "rows" in r}
    per_variant = {v: decode_of(r) for v, r in variants.items()}
    winner = run.best_variant() if per_variant else None
    fused = winner not in (None, "baseline")
    km = s.get("kernels_matvec") or {}
    copy = ((km.get("fp16") or {}).get("copy_bandwidth") or {}).get("gb_per_s") or ((s.get("attention") or {}).get("copy_bandwidth") or {}).get("gb_per_s")
    weight_bytes = next(iter(variants.values()))["weight_bytes"] if variants else None
    attention = {}
    for r in (s.get("attention") or {}).get("rows", []):
        if r["kernel"] == "attention" and r["shape"].startswith("decode seq"):
            keys = r["shape"].split()[2].rstrip(",")
            attention.setdefault(keys, {})[f"batch{r['batch']}"] = {"us": r["time_us"], "pct_copy_bandwidth": r["pct_copy_bandwidth"]}
    pre = s.get("prefill") or {}
    prefill_tok_s = next((r["tokens_per_second"] for r in pre.get("rows", []) if r["test"].startswith("pp")), None)
    quant = s.get("decode_quant") or {}
    lg = s.get("logits") or {}

    def quant_summary(f):
        q = quant.get(f)
        if not isinstance(q, dict) or "rows" not in q:
            return None
        dec = decode_of(q)
        base = per_variant.get(q["variant"], {}).get("1", {}).get("tok_s")
        return {"variant": q["variant"], "weight_bytes": q.get("weight_bytes"), "decode": dec,
                "speedup_vs_fp16_batch1": (dec["1"]["tok_s"] / base) if base and dec.get("1") else None,
                "matvec_pct_of_copy": matvec_pct(km.get(f), f, fused), "decode_logits_vs_fp32": logits_entry(lg.get(f"decode_{f}"))}

    checks = {}
    for v in VARIANTS:
        g = s.get("greedy") or {}
        entry = {"decode_logits": logits_entry(lg.get(f"decode_{v}"))}
        for b in (1, 4):
            e = g.get(f"{v}_b{b}") or {}
            entry[f"greedy_b{b}_identical"] = e.get("identical", e.get("same_as_baseline"))
        checks[v] = entry
    wide = s.get("decode_wide") or {}
    sv = s.get("serve") or {}
    levels = {str(l["concurrency"]): {k: l[k] for k in ("output_tokens_per_second", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "failed")}
              for l in sv.get("levels", [])}
    wdec = decode_of(wide)
    b1 = per_variant.get(winner, {}).get("1", {}).get("tok_s") if winner else None
    san = s.get("sanitizer") or {}
    sanitizer = {}
    for t in SANITIZER_TOOLS + ("initcheck",):
        runs = san.get(t)
        if isinstance(runs, dict) and any(isinstance(x, dict) and "findings" in x for x in runs.values()):
            sanitizer[t] = {"runs": {f: {"exit": x.get("exit"), "errors": x.get("errors")} for f, x in runs.items()},
                            "errors": sum(x.get("errors") or 0 for x in runs.values()),
                            "findings": [dict(fd, format=f) for f, x in runs.items() for fd in x.get("findings", [])]}
        else:
            sanitizer[t] = None
    gc = s.get("graph_cache") or {}
    nc = s.get("ncu") or {}
    hf = ((s.get("hf_timing") or {}).get("batch1") or {}).get("tokens_per_second")
    ev = s.get("evaluation") or {}
    evaluation = {f"golden_{m}_max_logprob_error": (ev.get(f"golden_{m}") or {}).get("max_logprob_error") for m in ("prefill", "decode")}
    evaluation["golden_within_1e-4"] = ev.get("golden_within_1e-4")
    for acc in ("fp32", "fp64"):
        d = ev.get(f"decode_bf16_fp32kv_{acc}")
        evaluation[f"decode_bf16_fp32kv_{acc}_tok_s_batch1"] = (decode_of(d).get("1") or {}).get("tok_s") if isinstance(d, dict) and "rows" in d else None
    return {
        "gpu": next((a.get("name") for a in (s.get("info") or {}).get("accelerators", []) if a.get("kind") == "cuda"), None),
        "versions": run.results.get("versions"),
        "device": next(iter(variants.values()))["device"] if variants else None,
        "commit": next(iter(variants.values()))["commit"] if variants else None,
        "cpu_smoke": bool(run.smoke),
        "elapsed_s": round(time.time() - run.t0, 1),
        "deadline_left_s": round(run.deadline - time.time(), 1) if run.deadline else None,
        "steps": step_table(run.results),
        "copy_gb_per_s": copy,
        "torch_copy_gb_per_s": (s.get("copy_bandwidth") or {}).get("gb_per_s_read_plus_write"),
        "weight_bytes_per_token": weight_bytes,
        "bound_tok_s_batch1": (copy * 1e9 / weight_bytes) if copy and weight_bytes else None,
        "winning_variant": winner,
        "decode": per_variant.get(winner, {}) if winner else None,
        "variants": per_variant or None,
        "matvec_pct_of_copy": matvec_pct(km.get("fp16"), "fp16", fused),
        "matvec_timing": (km.get("fp16") or {}).get("timing"),
        "attention_us": attention or None,
        "prefill_tok_s": prefill_tok_s,
        "hf_decode_tok_s_batch1": hf,
        "logits_prefill_vs_fp32": logits_entry(lg.get("prefill")),
        "logits_bf16_vs_fp32": logits_entry(lg.get("decode_bf16")),
        "evaluation": evaluation if any(v is not None for v in evaluation.values()) else None,
        "variant_checks": checks,
        "decode_q8_0": quant_summary("q8_0"),
        "decode_q4_0": quant_summary("q4_0"),
        "decode_q4_k": quant_summary("q4_k"),
        "decode_q5_k": quant_summary("q5_k"),
        "decode_q6_k": quant_summary("q6_k"),
        "decode_q4_k_m": quant_summary("q4_k_m"),
        "decode_wide": {"variant": wide.get("variant"), "decode": wdec} if wdec else None,
        "serve": {"levels": levels, "decode_batch16_over_batch1": (wdec["16"]["tok_s"] / b1) if b1 and "16" in wdec else None,
                  "concurrency64_over_batch1": (levels["64"]["output_tokens_per_second"] / b1) if b1 and "64" in levels else None} if levels else None,
        "sanitizer": sanitizer,
        "graph_cache": {k: gc.get(k) for k in ("requests", "ok", "distinct_modes", "slots", "graphs_before", "graphs_after", "device_free_bytes_before",
                                               "device_free_bytes_after", "allocated_bytes_before", "allocated_bytes_after", "process_mib_before",
                                               "process_mib_after", "bounded")} if "requests" in gc else None,
        "ncu": {k: nc.get(k) for k in ("variant", "launches_per_step", "launch_skip", "launch_count", "counts_agree", "exit")} if "launch_skip" in nc else None,
    }


# ---------------------------------------------------------------------------------------------
# 5. results.md

def fmt(x, d=1):
    return "n/a" if x is None else f"{x:.{d}f}"


def markdown(run, summ):
    s = run.results["steps"]
    lines = ["# GPU check results" + (" (CPU smoke)" if run.smoke else ""), ""]
    smi = Path(run.args.logs) / "nvidia-smi.csv"
    if smi.exists():
        lines.append(f"Device: {smi.read_text().strip().splitlines()[-1]}")
    lines += [f"Elapsed {summ.get('elapsed_s')} s; deadline left {summ.get('deadline_left_s')} s", "",
              "| step | status | seconds | cap | error |", "|---|---|---|---|---|"]
    for k, v in summ.get("steps", {}).items():
        lines.append(f"| {k} | {v.get('status')} | {v.get('seconds')} | {v.get('cap_s')} | {(v.get('error') or '')[:200]} |")
    lines += ["", f"Copy bandwidth {fmt(summ.get('copy_gb_per_s'))} GB/s; weight bytes/token {summ.get('weight_bytes_per_token')}; "
              f"batch-1 bound {fmt(summ.get('bound_tok_s_batch1'))} tok/s; winning variant **{summ.get('winning_variant')}**"]
    if summ.get("variants"):
        lines += ["", "## Decode per variant (tg after a 16-token prompt)", "", "| variant | batch | tok/s | ms/step | launches/step | host us/step |", "|---|---|---|---|---|---|"]
        for v, rows in summ["variants"].items():
            for b, r in rows.items():
                lines.append(f"| {v} | {b} | {fmt(r['tok_s'])} +- {fmt(r['tok_s_stddev'])} | {fmt(r['ms_per_step'], 3)} | {r['launches_per_step']} | {fmt(r['host_us_per_step'], 0)} |")
    for f in QUANT_FORMATS:
        q = summ.get(f"decode_{f}")
        if q:
            d = q["decode"].get("1", {})
            lines.append(f"- {f} ({q['variant']}): batch 1 {fmt(d.get('tok_s'))} tok/s, x{fmt(q.get('speedup_vs_fp16_batch1'), 2)} vs fp16; logits {json.dumps(q.get('decode_logits_vs_fp32'))}")
    if summ.get("matvec_pct_of_copy"):
        lines += ["", f"Matvec % of copy bandwidth at batch 1 ({summ.get('matvec_timing')}): {json.dumps(summ['matvec_pct_of_copy'])}"]
    lg = s.get("logits") or {}
    if lg:
        lines += ["", "## Logits", "", "| comparison | max abs err | err/spread | top-1 all |", "|---|---|---|---|"]
        for k, v in lg.items():
            if isinstance(v, dict) and "max_abs_error" in v:
                lines.append(f"| {k} | {fmt(v['max_abs_error'], 4)} | {fmt(100 * v['max_error_over_spread'], 2) if v.get('max_error_over_spread') is not None else 'n/a'}% | {v.get('all_top1_agreement')}/{v.get('positions')} |")
    lines += ["", "## GPU-only defects", "", f"sanitizer: {json.dumps({t: (v and {'errors': v['errors'], 'findings': v['findings'][:10]}) for t, v in (summ.get('sanitizer') or {}).items()})}",
              "", f"graph cache: {json.dumps(summ.get('graph_cache'))}", "", f"ncu: {json.dumps(summ.get('ncu'))}"]
    lines += ["", "## summary.json", "", "```json", json.dumps({k: v for k, v in summ.items() if k not in ("variants", "steps")}, indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 6. the steps, in the order of the run (decisive first), and main

def model_step(run, res):
    import torch
    import transformers
    run.results["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
                               "gpu": torch.cuda.get_device_name(0)}
    return build_model(run)


# name, cap on a GPU (s), cap in the CPU smoke (s; None: left out of it), function. Left out of the smoke besides the
# steps that need torch: two plain CLI calls with no logic of their own here (prefill is bench e2e as in decode_quant;
# memory --allocate has its own tests), to keep the smoke short.
STEPS = (
    Step("info", 40, 90, info, model=None),
    Step("copy_bandwidth", 30, None, copy_bandwidth, torch=True, model=None),
    Step("model", 180, 90, model_step, torch=True, smoke_fn=smoke_model, model=None),
    Step("decode_variants", 150, 90, decode_variants),
    Step("kernels_matvec", 120, 90, kernels_matvec),
    Step("decode_quant", 100, 90, decode_quant),
    Step("reference", 90, None, reference, torch=True, model=TORCH_MODEL),
    Step("logits", 160, 90, logits, reference=True),
    Step("evaluation", 120, 60, evaluation),
    Step("sanitizer", 180, 90, sanitizer),
    Step("graph_cache", 90, 90, graph_cache),
    Step("decode_wide", 120, 90, decode_wide),
    Step("serve", 150, 90, serve),
    Step("attention", 90, 90, attention),
    Step("prefill", 90, None, prefill),
    Step("greedy", 150, 90, greedy, reference=True),
    Step("memory", 60, None, memory),
    Step("hf_timing", 60, None, hf_timing, torch=True, model=TORCH_MODEL),
    Step("ncu", 150, 90, ncu),
    # the diagnosis steps of the first GPU run: only when named in --only
    Step("reference_variants", 150, None, reference_variants, torch=True, model=TORCH_MODEL, reference=True, planned=False),
    Step("diagnose", 400, None, diagnose, torch=True, reference=True, planned=False),
    Step("bisect", 400, None, bisect, torch=True, planned=False),
)
STEP = {s.name: s for s in STEPS}
PLAN = tuple(s.name for s in STEPS if s.planned)  # the default run
assert len(STEP) == len(STEPS), "a step name is declared twice"


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True, help="the ilgpu-llama command (may be 'dotnet path/ilgpu-llama.dll')")
    ap.add_argument("--out", required=True, help="results.json, summary.json, results.md (rewritten after every step)")
    ap.add_argument("--logs", default=None, help="every CLI log (run.sh packs it into OUT/logs.tar.gz); default OUT/../ilgpu-logs")
    ap.add_argument("--work", default="/tmp/ilgpu-work", help="models, logits files, the demo model (CLI working directory)")
    ap.add_argument("--deadline-at", type=float, default=None, help="absolute Unix time by which everything is written (run.sh passes its start + --deadline)")
    ap.add_argument("--deadline", type=float, default=540, help="seconds from now, when --deadline-at is not given")
    ap.add_argument("--only", default=None, help="comma-separated steps to (re)run into the results already in --out (or --from)")
    ap.add_argument("--from", dest="from_", default=None,
                    help="results.json (or its folder) of an earlier call to continue from, e.g. carried to a fresh machine whose OUT is empty")
    ap.add_argument("--skip", default="", help="comma-separated steps to leave out")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--target-logit-std", type=float, default=4.0)
    ap.add_argument("--pp", type=int, default=512, help="prompt length of the prefill test")
    ap.add_argument("--tg", type=int, default=128, help="generated length of the decode tests")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-repeats", type=int, default=2)
    ap.add_argument("--cpu-smoke", action="store_true", help="check the script on the CPU accelerator with the demo model and tiny sizes (no torch)")
    ap.add_argument("--smoke-cap", type=int, default=None, help="per-step cap in the CPU smoke (default: each step's own, 90 s)")
    args = ap.parse_args(argv)
    args.cli_cmd = shlex.split(args.cli)
    # The smoke's CLI calls are short: JIT-compiling once at full optimisation (no tiering) costs ~25 % less CPU
    # than tiered compilation there. The GPU run keeps the runtime's defaults (its timings are compared across runs).
    args.child_env = {"DOTNET_TieredCompilation": "0"} if args.cpu_smoke else {}
    if args.cpu_smoke:
        args.new_tokens, args.pp, args.tg, args.repeats, args.decode_repeats = 4, 16, 4, 1, 1
    for a in ("out", "work"):
        setattr(args, a, str(Path(getattr(args, a)).resolve()))
    args.logs = str(Path(args.logs).resolve()) if args.logs else str(Path(args.out).parent / "ilgpu-logs")
    return args


def main():
    t0 = time.time()
    args = parse_args()
    for d in (args.out, args.work, args.logs):
        Path(d).mkdir(parents=True, exist_ok=True)
    run = Run(args, t0)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    prev = Path(args.out) / "results.json"
    if args.from_:
        prev = Path(args.from_) / "results.json" if Path(args.from_).is_dir() else Path(args.from_)
        if not prev.exists():
            sys.exit(f"--from: {prev} does not exist")
    if (args.only or args.from_) and prev.exists():
        run.results.update(json.loads(prev.read_text()))
        run.log(f"--only: read {len(run.results.get('status', {}))} steps from {prev}")
    if args.only:
        wanted = [x for x in args.only.split(",") if x]
        unknown = [x for x in wanted if x not in STEP]
        if unknown:
            sys.exit(f"--only: unknown steps {unknown}; the steps are {', '.join(STEP)}")
    else:
        wanted = PLAN
    plan = run.plan(wanted, set(filter(None, args.skip.split(","))))
    run.log(f"plan: {', '.join(plan)}; deadline in {run.deadline - time.time():.0f}s")
    rc = 0
    try:
        for name in plan:
            run.run_step(STEP[name])
    except Terminated as e:
        run.log(f"terminated ({e}); results so far are in {args.out}")
        rc = 143
    finally:
        run.kill_children()
        run.save()
    bad = ("failed", "timeout", "killed") + (("skipped (deadline)",) if run.smoke else ())  # the smoke must check every step
    failed = [k for k in plan if run.results["status"].get(k, {}).get("status") in bad]
    run.log(f"done{' (cpu smoke)' if run.smoke else ''}: {len(plan)} steps, failed or timed out: {failed or 'none'}")
    return rc or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
