#!/usr/bin/env python3
"""GPU check of ilgpu-llama against Hugging Face transformers at full Llama 3.2 1B size.

Runs on the device machine (PyTorch + transformers, no .NET SDK) via tools/device/run.sh:
  1. builds LlamaForCausalLM with the real Llama 3.2 1B config and seeded random weights (bf16),
     with the embedding scaled so the next-token distribution is peaked like a trained model's
     (random init gives near-uniform logits where every argmax is a near-tie), and saves it;
  2. transformers reference: fp32 greedy generation (batch 1 and 4) and fp32 logits of every
     position, plus bf16 eager generate timing at batch 1 and 4;
  3. ilgpu-llama on CUDA: logits (prefill and decode paths) compared with the fp32 reference,
     greedy generate --json at batch 1 and 4 (CUDA graph on and off) compared token by token;
  4. every decode variant (--decode-variant): decode-path logits and greedy batch 1/4 against the
     reference, and bench e2e (pp512 at batch 1..4, tg128 at batch 1..4) side by side;
  5. ilgpu-llama bench kernels (per-kernel % of copy bandwidth, attention at 64..32768 keys) /
     memory --allocate, and a torch copy-bandwidth figure;
  6. writes results.json, results.md and summary.json (the figures docs/performance.md quotes) to --out.
Every step is time-limited and isolated: a failure is recorded and the rest still runs.

--cpu-smoke runs the ilgpu-llama half on this machine's CPU accelerator with the built-in demo
model and tiny kernel shapes (no torch needed), to check the script and the CLI flags it uses
before GPU time is spent.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

T0 = time.time()
RESULTS = {"steps": {}, "errors": {}, "timings_s": {}}
ARGS = None
DEV = "cuda"
VARIANTS = ["baseline", "fused-norm", "fused-norm-short-attn"]


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def save():
    out = Path(ARGS.out)
    (out / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def step(name, fn, *a, **kw):
    t = time.time()
    log(f"--- {name}")
    try:
        RESULTS["steps"][name] = fn(*a, **kw)
        log(f"{name}: ok in {time.time() - t:.1f}s")
    except Exception as e:  # record and go on
        RESULTS["errors"][name] = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc()
    RESULTS["timings_s"][name] = round(time.time() - t, 2)
    save()
    return RESULTS["steps"].get(name)


def cli(name, args, timeout, parse_json=True):
    """Runs ilgpu-llama, keeps its stdout/stderr in the output folder, returns parsed JSON stdout."""
    out = Path(ARGS.out)
    t = time.time()
    p = subprocess.run([ARGS.cli] + args, capture_output=True, text=True, timeout=timeout)
    (out / f"{name}.stderr.txt").write_text(p.stderr)
    (out / f"{name}.stdout.txt").write_text(p.stdout[-200000:])
    log(f"  ilgpu-llama {' '.join(a if len(a) < 60 else a[:57] + '...' for a in args)} -> exit {p.returncode} in {time.time() - t:.1f}s")
    tail = "\n".join(p.stderr.strip().splitlines()[-6:])
    if tail:
        print("    " + tail.replace("\n", "\n    "), flush=True)
    if p.returncode not in (0,) and not (parse_json and p.stdout.strip().startswith("{")):
        raise RuntimeError(f"exit {p.returncode}: {tail}")
    if not parse_json:
        return {"exit": p.returncode, "stdout": p.stdout[-4000:]}
    return json.loads(p.stdout)


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


def build_model():
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(ARGS.seed)
    model, used = None, None
    for variant in ("rope_scaling", "rope_parameters"):
        try:
            cfg = make_config(variant)
            with torch.device("cuda"):
                m = LlamaForCausalLM(cfg)
            inv = m.model.rotary_emb.inv_freq.detach().double().cpu().numpy()
            err = float(np.max(np.abs(inv - expected_inv_freq()) / expected_inv_freq()))
            log(f"config via {variant}: llama3 inv_freq max rel error {err:.2e}")
            if err < 1e-5:
                model, used = m, variant
                break
            del m
        except Exception as e:
            log(f"config via {variant} failed: {e}")
    if model is None:
        raise RuntimeError("could not build a config whose RoPE matches llama3 scaling")
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    # Peak the distribution: with tied embeddings, logit scale is proportional to the embedding
    # scale (the final RMSNorm removes the hidden state's own scale). Measure, rescale once, measure.
    prompt = torch.randint(0, 128256, (1, ARGS.prompt_len), generator=torch.Generator().manual_seed(ARGS.seed + 1)).cuda()

    def spread():
        with torch.no_grad():
            logits = model(prompt).logits[0].float()
        top2 = torch.topk(logits, 2, dim=-1).values
        return float(logits.std(dim=-1).mean()), float((top2[:, 0] - top2[:, 1]).median())

    std0, margin0 = spread()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(ARGS.target_logit_std / std0)
    std1, margin1 = spread()
    log(f"logit std {std0:.3f} -> {std1:.3f}, median top-1/top-2 margin {margin0:.3f} -> {margin1:.3f}")

    model_dir = Path(ARGS.work) / "llama-3.2-1b-random"
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
    log(f"rotary inv_freq vs llama3 formula: {inv_check}")
    globals()["REF32"] = ref
    cfg_json = json.loads((model_dir / "config.json").read_text())
    files = sorted(p.name for p in model_dir.iterdir())
    RESULTS["model_dir"] = str(model_dir)
    globals()["MODEL"] = model
    return {"config_variant": used, "inv_freq_check": inv_check, "logit_std_before": std0, "logit_std": std1, "median_margin_before": margin0,
            "median_margin": margin1, "files": files, "config_json": cfg_json,
            "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# 2. transformers reference

def prompts():
    import torch
    g = torch.Generator().manual_seed(ARGS.seed + 2)
    body = torch.randint(0, 128000, (4, ARGS.prompt_len - 1), generator=g)
    bos = torch.full((4, 1), 128000, dtype=torch.long)
    return torch.cat([bos, body], dim=1)


def hf_generate(model, ids, new_tokens):
    import torch
    ids = ids.cuda()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    return out[:, ids.shape[1]:].cpu().tolist()


def reference():
    import numpy as np
    import torch
    p = prompts()
    ref = globals()["REF32"]  # fp32 reference loaded from the saved model (weights are exactly the bf16 values)
    res = {"prompts": p.tolist()}
    res["greedy_b1"] = hf_generate(ref, p[:1], ARGS.new_tokens)[0]
    res["greedy_b4"] = hf_generate(ref, p, ARGS.new_tokens)
    # fp32 logits of every position of prompt + greedy tokens, and the per-step margins
    margins = []
    for i in range(4):
        seq = p[i].tolist() + res["greedy_b4"][i]
        with torch.no_grad():
            logits = ref(torch.tensor([seq], device="cuda")).logits[0].float()
        top2 = torch.topk(logits, 2, dim=-1).values
        m = (top2[:, 0] - top2[:, 1]).cpu().numpy()
        margins.append([float(x) for x in m[ARGS.prompt_len - 1: ARGS.prompt_len - 1 + ARGS.new_tokens]])
        if i == 0:
            full = p[0].tolist() + res["greedy_b1"]
            with torch.no_grad():
                l1 = ref(torch.tensor([full], device="cuda")).logits[0].float().cpu().numpy()
            np.save(Path(ARGS.work) / "ref_logits.npy", l1.astype(np.float32))
            res["logits_tokens"] = full
            top2b = np.sort(l1, axis=-1)[:, -2:]
            res["margins_b1"] = [float(x) for x in (top2b[:, 1] - top2b[:, 0])[ARGS.prompt_len - 1: ARGS.prompt_len - 1 + ARGS.new_tokens]]
    res["margins_b4"] = margins
    res["b1_equals_b4_row0"] = res["greedy_b1"] == res["greedy_b4"][0]
    torch.cuda.empty_cache()
    RESULTS["ref"] = res
    return {k: v for k, v in res.items() if k not in ("logits_tokens",)}


def reference_variants():
    """Two more references for the same tokens, to separate our error from the reference's own:
    float64 (what fp32 itself deviates from), and fp32 with K and V rounded to fp16 after RoPE
    exactly where ilgpu-llama's cache rounds them (isolates the fp16 KV cache's effect)."""
    import numpy as np
    import torch
    ref = globals()["REF32"]
    toks = torch.tensor([RESULTS["ref"]["logits_tokens"]], device="cuda")
    out = {}
    m64 = ref.double()
    with torch.no_grad():
        np.save(Path(ARGS.work) / "ref64_logits.npy", m64(toks).logits[0].float().cpu().numpy())
    out["fp64"] = "ok"
    m32 = ref.float()
    np.save(Path(ARGS.work) / "ref_fp16kv_logits.npy", fp16kv_logits(m32, toks))
    out["fp16kv"] = "ok"
    torch.cuda.empty_cache()
    w = Path(ARGS.work)
    pairs = [("hf_fp32_vs_fp64", "ref_logits.npy", "ref64_logits.npy"), ("ours_vs_fp64", "ours_prefill.npy", "ref64_logits.npy"),
             ("ours_vs_hf_fp16kv", "ours_prefill.npy", "ref_fp16kv_logits.npy"), ("hf_fp16kv_vs_fp32", "ref_fp16kv_logits.npy", "ref_logits.npy")]
    for name, a, b in pairs:
        if (w / a).exists() and (w / b).exists():
            r = cli(f"compare_{name}", ["compare-logits", "--ours", str(w / a), "--reference", str(w / b), "--json"], 120)
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


def random_variant(name, cfg):
    """A 160-token random sequence and a random model for cfg (embedding scaled to the target logit
    std), saved to work/name; returns (directory, tokens, fp32-with-fp16-KV logits, fp32 logits)."""
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(ARGS.seed)
    with torch.device("cuda"):
        m = LlamaForCausalLM(cfg)
    m = m.to(torch.bfloat16).eval()
    toks = torch.randint(0, cfg.vocab_size, (1, 160), generator=torch.Generator().manual_seed(ARGS.seed + 5)).cuda()
    with torch.no_grad():
        std0 = float(m(toks).logits[0].float().std(dim=-1).mean())
        m.model.embed_tokens.weight.mul_(ARGS.target_logit_std / std0)
    d = Path(ARGS.work) / name
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


def diagnose():
    """Bisects the difference to transformers: the golden tiny model on CUDA and on the CPU
    accelerator; small random models that each change one dimension of the 1B config, on both
    devices, against transformers fp32 with the same fp16 KV rounding; per-position error."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    w = Path(ARGS.work)
    out = {}
    # golden tiny model on CUDA vs its float64 reference (the tests check the CPU accelerator)
    golden = Path.cwd() / "tests" / "fixtures" / "tiny-llama3"
    case = json.loads((golden / "golden.json").read_text())["cases"][2]
    gt = ",".join(map(str, case["prompt"] + case["greedy_16"]))
    for dev in ("cuda", "cpu"):
        f = w / f"golden_{dev}.npy"
        cli(f"golden_logits_{dev}", ["logits", "--model", str(golden), "--tokens", gt, "--out", str(f), "--device", dev], 180, parse_json=False)
        r = cli(f"golden_compare_{dev}", ["compare-logits", "--ours", str(f), "--reference", str(golden / case["logits_file"]), "--json"], 60)
        out[f"golden_{dev}"] = {"max_abs_error": r["max_abs_error"], "top1": f"{r['all_top1_agreement']}/{r['positions']}"}
    # 1B: error per position, ours vs transformers with fp16 KV
    if (w / "ours_prefill.npy").exists() and (w / "ref_fp16kv_logits.npy").exists():
        out["1b_per_position"] = per_position(np.load(w / "ours_prefill.npy"), np.load(w / "ref_fp16kv_logits.npy"))
    # 1B with bf16 weights on the device (no fp16 conversion at all)
    f = w / "ours_bf16.npy"
    cli("logits_bf16", ["logits", "--model", RESULTS["model_dir"], "--tokens", ",".join(map(str, RESULTS["ref"]["logits_tokens"])), "--out", str(f),
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
        d, toks, ref, ref32 = random_variant(f"variant_{name}", make_config(RESULTS["steps"]["model"]["config_variant"], **ov))
        res = {"fp16kv_vs_fp32": per_position(ref, ref32)}
        for dev in (("cuda", "cpu") if name.startswith("small") else ("cuda",)):
            f = w / f"variant_{name}_{dev}.npy"
            cli(f"variant_{name}_{dev}", ["logits", "--model", str(d), "--tokens", ",".join(map(str, toks)), "--out", str(f),
                                         "--device", dev, "--max-seq-len", "512"], 240, parse_json=False)
            res[dev] = per_position(np.load(f), ref)
        out[name] = res
        log(f"  variant {name}: {json.dumps(res)} ({time.time() - t:.1f}s)")
    return out


def bisect():
    """Variants between a small model that matches transformers and the 1B shape that does not,
    changing one dimension at a time (CUDA only, 2 layers, fp16-KV transformers reference)."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM
    w = Path(ARGS.work)
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
        d, toks, ref, _ = random_variant(f"bisect_{name}", cfg)
        f = w / f"bisect_{name}.npy"
        cli(f"bisect_{name}", ["logits", "--model", str(d), "--tokens", ",".join(map(str, toks)), "--out", str(f), "--device", "cuda", "--max-seq-len", "512"], 120, parse_json=False)
        out[name] = per_position(np.load(f), ref)
        log(f"  {name}: {json.dumps(out[name])} ({time.time() - t:.1f}s)")
    return out


def ncu_profile():
    """Nsight Compute on a few decode-step kernels (direct launches), if ncu is present."""
    import shutil
    ncu = shutil.which("ncu") or next((str(p) for p in Path("/opt/nvidia").glob("nsight-compute/*/ncu")), None) or next((str(p) for p in Path("/usr/local").glob("cuda*/bin/ncu")), None)
    if not ncu:
        return {"skipped": "ncu not found"}
    p = RESULTS["ref"]["prompts"][0]
    cmd = [ncu, "--clock-control", "none", "--launch-skip", "420", "--launch-count", "12", "--section", "SpeedOfLight",
           "--section", "Occupancy", "--section", "LaunchStats", "--csv", ARGS.cli, "generate", "--model", RESULTS["model_dir"],
           "--temperature", "0", "--ignore-eos", "--max-new-tokens", "8", "--device", "cuda", "--no-cuda-graph", "--json",
           "--tokens", ",".join(map(str, p))]
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    (Path(ARGS.out) / "ncu.csv").write_text(r.stdout)
    (Path(ARGS.out) / "ncu.stderr.txt").write_text(r.stderr)
    log(f"  ncu exit {r.returncode} in {time.time() - t:.1f}s")
    keep = {}
    for line in r.stdout.splitlines():
        cols = [c.strip('"') for c in line.split('","')]
        if len(cols) > 14 and cols[-3] in ("Duration", "Memory Throughput", "DRAM Throughput", "Achieved Occupancy", "Registers Per Thread", "Block Size", "Grid Size", "Compute (SM) Throughput"):
            keep.setdefault(f"{cols[0]}:{cols[4][:60]}", {})[cols[-3]] = f"{cols[-1]} {cols[-2]}"
    return {"exit": r.returncode, "kernels": keep}


def hf_timing():
    import torch
    model = globals()["MODEL"]
    p = prompts()
    out = {}
    for b in (1, 4):
        ids = p[:b].cuda()
        hf_generate(model, ids, 8)  # warm-up
        torch.cuda.synchronize()
        t = time.time()
        hf_generate(model, ids, ARGS.new_tokens)
        torch.cuda.synchronize()
        dt = time.time() - t
        out[f"batch{b}"] = {"seconds": dt, "new_tokens": b * ARGS.new_tokens, "tokens_per_second": b * ARGS.new_tokens / dt,
                            "ms_per_step": dt * 1000 / ARGS.new_tokens}
        log(f"transformers bf16 eager generate batch {b}: {b * ARGS.new_tokens / dt:.1f} tok/s ({dt * 1000 / ARGS.new_tokens:.2f} ms/step)")
    return out


def copy_bandwidth():
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


def ours_logits():
    ref = RESULTS["ref"]
    toks = ",".join(map(str, ref["logits_tokens"]))
    out = {}
    for mode in ("prefill", "decode"):
        f = Path(ARGS.work) / f"ours_{mode}.npy"
        cli(f"logits_{mode}", ["logits", "--model", RESULTS["model_dir"], "--tokens", toks, "--out", str(f), "--mode", mode,
                               "--device", DEV, "--max-seq-len", "512"], 240, parse_json=False)
        out[mode] = cli(f"compare_{mode}", ["compare-logits", "--ours", str(f), "--reference", str(Path(ARGS.work) / "ref_logits.npy"), "--json"], 240)
    a, b = Path(ARGS.work) / "ours_prefill.npy", Path(ARGS.work) / "ours_decode.npy"
    out["prefill_vs_decode"] = cli("compare_prefill_decode", ["compare-logits", "--ours", str(a), "--reference", str(b), "--json"], 240)
    for v in out.values():
        v.pop("disagreements", None) if len(v.get("disagreements", [])) > 20 else None
    RESULTS["logit_tolerance"] = max(out["prefill"]["max_abs_error"], out["decode"]["max_abs_error"])
    return out


def ours_generate():
    ref = RESULTS["ref"]
    tol = RESULTS.get("logit_tolerance")
    p = ref["prompts"]
    common = ["generate", "--model", RESULTS["model_dir"], "--temperature", "0", "--ignore-eos", "--max-new-tokens",
              str(ARGS.new_tokens), "--json", "--device", "cuda", "--max-seq-len", "512"]
    out = {}
    runs = [("b1_graph", p[:1], []), ("b1_nograph", p[:1], ["--no-cuda-graph"]), ("b4_graph", p, []), ("b4_nograph", p, ["--no-cuda-graph"])]
    for name, ps, extra in runs:
        args = list(common) + extra
        for row in ps:
            args += ["--tokens", ",".join(map(str, row))]
        j = cli(f"generate_{name}", args, 300)
        seqs = j["sequences"]
        refs = [ref["greedy_b1"]] if len(ps) == 1 else ref["greedy_b4"]
        margins = [ref["margins_b1"]] if len(ps) == 1 else ref["margins_b4"]
        out[name] = {
            "decode_tokens_per_second": j["decode_tokens_per_second"], "decode_ms_per_step": j["decode_ms_per_step"],
            "prefill_tokens_per_second": j["prefill_tokens_per_second"], "cuda_graph": j["cuda_graph"],
            "identical": [s["generated_tokens"] == r for s, r in zip(seqs, refs)],
            "first_divergence": [first_divergence(s["generated_tokens"], r, m, tol) for s, r, m in zip(seqs, refs, margins)],
            "memory": j["memory"],
        }
    return out


def ours_bench_kernels():
    shapes = "tiny" if ARGS.cpu_smoke else "llama-3.2-1b"
    args = ["bench", "kernels", "--device", DEV, "--shapes", shapes, "--json"]
    if not ARGS.cpu_smoke:
        args += ["--plot", str(Path(ARGS.out) / "roofline.png")]
    else:
        args += ["--repeats", "1", "--warmup", "0"]
    return cli("bench_kernels", args, ARGS.bench_timeout)


def ours_variants():
    """bench e2e for every decode variant, side by side: pp at batch 1..4 and tg at batch 1..4."""
    out = {}
    for v in VARIANTS:
        out[v] = cli(f"bench_e2e_{v}", ["bench", "e2e", "--model", RESULTS["model_dir"], "--device", DEV, "--prompt-tokens", str(ARGS.pp),
                                        "--gen-tokens", str(ARGS.tg), "--repeats", str(ARGS.repeats), "--decode-variant", v, "--json"], 300)
        tg = {r["batch"]: r for r in out[v]["rows"] if r["test"].startswith("tg")}
        log(f"  {v}: " + ", ".join(f"b{b} {r['tokens_per_second']:.1f} tok/s ({r['ms_per_step']:.3f} ms/step, {r['launches_per_step']} launches, host {r['host_us_per_step']:.0f} us)" for b, r in sorted(tg.items())))
    return out


QUANT_FORMATS = ("q8_0", "q4_0")


def best_variant():
    """The decode variant with the highest batch-1 tok/s in ours_variants (baseline if that step did not run)."""
    per = {v: next((r["tokens_per_second"] for r in rep.get("rows", []) if r["test"].startswith("tg") and r["batch"] == 1), 0)
           for v, rep in (RESULTS["steps"].get("ours_variants") or {}).items()}
    return max(per, key=per.get) if per else "baseline"


def ours_quantized():
    """Q8_0 and Q4_0 (quantised at load) beside fp16 in the same run: bench e2e with the winning decode
    variant, the quantised matvec/GEMM kernels' bandwidth on their own bytes, and decode-path logits
    against the fp32 reference (quality on this random-weight model)."""
    out = {}
    v = best_variant()
    ref = RESULTS.get("ref")
    for f in QUANT_FORMATS:
        res = {"variant": v}
        res["bench_e2e"] = cli(f"bench_e2e_{f}", ["bench", "e2e", "--model", RESULTS["model_dir"], "--device", DEV, "--dtype", f, "--prompt-tokens", str(ARGS.pp),
                                                  "--gen-tokens", str(ARGS.tg), "--repeats", str(ARGS.repeats), "--decode-variant", v, "--json"], 300)
        args = ["bench", "kernels", "--device", DEV, "--dtype", f, "--json"]
        args += ["--shapes", "tiny", "--repeats", "1", "--warmup", "0"] if ARGS.cpu_smoke else ["--shapes", "llama-3.2-1b"]
        res["bench_kernels"] = cli(f"bench_kernels_{f}", args, ARGS.bench_timeout)
        if ref:
            toks = ",".join(map(str, ref["logits_tokens"]))
            npy = Path(ARGS.work) / f"ours_decode_{f}.npy"
            cli(f"logits_decode_{f}", ["logits", "--model", RESULTS["model_dir"], "--tokens", toks, "--out", str(npy), "--mode", "decode",
                                      "--device", DEV, "--max-seq-len", "512", "--dtype", f, "--decode-variant", v], 240, parse_json=False)
            r = cli(f"compare_decode_{f}", ["compare-logits", "--ours", str(npy), "--reference", str(Path(ARGS.work) / "ref_logits.npy"), "--json"], 240)
            r.pop("disagreements", None)
            res["decode_logits_vs_fp32"] = r
        tg = {r["batch"]: r for r in res["bench_e2e"]["rows"] if r["test"].startswith("tg")}
        log(f"  {f}: " + ", ".join(f"b{b} {r['tokens_per_second']:.1f} tok/s" for b, r in sorted(tg.items())))
        out[f] = res
    return out


WIDE_BATCHES = "1,4,8,16,32,64"


def ours_wide_batches():
    """Decode past 4 sequences (one launch per matvec loops over tiles of 4): tok/s at batch 1..64 with
    the winning variant, to show the weights are read once per step (tok/s should grow ~linearly)."""
    v = best_variant()
    batches = "1,2,5" if ARGS.cpu_smoke else WIDE_BATCHES
    r = cli("bench_e2e_wide", ["bench", "e2e", "--model", RESULTS["model_dir"], "--device", DEV, "--max-batch-size", batches.split(",")[-1], "--batches", batches,
                               "--prompt-tokens", "16", "--gen-tokens", str(ARGS.tg), "--repeats", "1", "--decode-variant", v, "--json"], 400)
    r["variant"] = v
    return r


def ours_serve():
    """bench serve against an in-process server (64 KV slots, the winning variant): output tok/s, time to
    first token and inter-token latency at concurrency 1, 4, 16 and 64."""
    levels, slots = ("1,2", "2") if ARGS.cpu_smoke else ("1,4,16,64", "64")
    return cli("bench_serve", ["bench", "serve", "--model", RESULTS["model_dir"], "--device", DEV, "--max-batch-size", slots, "--concurrency", levels,
                               "--max-tokens", str(ARGS.tg if not ARGS.cpu_smoke else 4), "--decode-variant", best_variant(), "--json"], 500)


def ours_variant_checks():
    """Correctness of every variant: decode-path logits against the fp32 reference (the prefill path
    does not depend on the variant) and greedy generation at batch 1 and 4 against transformers."""
    ref = RESULTS.get("ref")
    out = {}
    for v in VARIANTS:
        res = {}
        if ref:
            toks = ",".join(map(str, ref["logits_tokens"]))
            f = Path(ARGS.work) / f"ours_decode_{v}.npy"
            cli(f"logits_decode_{v}", ["logits", "--model", RESULTS["model_dir"], "--tokens", toks, "--out", str(f), "--mode", "decode",
                                      "--device", DEV, "--max-seq-len", "512", "--decode-variant", v], 240, parse_json=False)
            r = cli(f"compare_decode_{v}", ["compare-logits", "--ours", str(f), "--reference", str(Path(ARGS.work) / "ref_logits.npy"), "--json"], 240)
            r.pop("disagreements", None)
            res["decode_logits"] = r
        prompts_ = ref["prompts"] if ref else [[1, 2, 3, 4, 5, 6, 7, 8]] * 4
        for b in (1, 4):
            args = ["generate", "--model", RESULTS["model_dir"], "--temperature", "0", "--ignore-eos", "--max-new-tokens", str(ARGS.new_tokens),
                    "--json", "--device", DEV, "--max-seq-len", "512", "--decode-variant", v]
            for row in prompts_[:b]:
                args += ["--tokens", ",".join(map(str, row))]
            j = cli(f"generate_{v}_b{b}", args, 300)
            seqs = [s_["generated_tokens"] for s_ in j["sequences"]]
            entry = {"decode_tokens_per_second": j["decode_tokens_per_second"], "decode_ms_per_step": j["decode_ms_per_step"]}
            if ref:
                refs = [ref["greedy_b1"]] if b == 1 else ref["greedy_b4"]
                margins = [ref["margins_b1"]] if b == 1 else ref["margins_b4"]
                entry["identical"] = [a == r for a, r in zip(seqs, refs)]
                entry["first_divergence"] = [first_divergence(a, r, m, RESULTS.get("logit_tolerance")) for a, r, m in zip(seqs, refs, margins)]
            else:
                entry["tokens"] = seqs
            res[f"greedy_b{b}"] = entry
        out[v] = res
    return out


def ours_memory():
    return cli("memory_allocate", ["memory", "--model", RESULTS["model_dir"], "--allocate", "--device", DEV, "--json"], 180)


def ours_info():
    return cli("info", ["info", "--json"], 60)


def smoke_model():
    """--cpu-smoke: the built-in demo model (written by a first generate) stands in for the 1B model."""
    cli("smoke_demo", ["generate", "--max-new-tokens", "2", "--device", "cpu", "--temperature", "0"], 300, parse_json=False)
    RESULTS["model_dir"] = str(Path.cwd() / "weights" / "demo-tiny-llama3")
    return {"model_dir": RESULTS["model_dir"]}


# ---------------------------------------------------------------------------------------------
# 4. summary.json: the figures docs/performance.md quotes, from the steps above

MATVEC_ROWS = {  # summary key -> (plain kernel, fused-norm kernel, shape label start) at batch 1
    "qkv": ("matvec_qkv_rope_fp16", "matvec_qkv_rope_norm_fp16", None),
    "o": ("matvec_fp16", "matvec_fp16", "q/o proj"),
    "gate_up": ("matvec_swiglu_fp16", "matvec_swiglu_norm_fp16", None),
    "down": ("matvec_fp16", "matvec_fp16", "down proj"),
    "lm_head": ("matvec_fp16", "matvec_norm_fp16", "lm head"),
}


def variant_checks(checks):
    """Per variant: greedy tokens identical to transformers (GPU run), or to the baseline variant's (CPU smoke, no reference)."""
    out = {}
    base = checks.get("baseline", {})
    for v, c in checks.items():
        entry = {}
        for k in ("greedy_b1", "greedy_b4"):
            g = c.get(k) or {}
            if "identical" in g:
                entry[k] = g["identical"]
            elif "tokens" in g:
                entry[k + "_same_as_baseline"] = g["tokens"] == (base.get(k) or {}).get("tokens")
        if c.get("decode_logits"):
            entry["decode_logits_max_abs_error"] = c["decode_logits"].get("max_abs_error")
        out[v] = entry
    return out


def serve_summary(report):
    """Per concurrency level of bench serve, and the serving goals' ratios to batch-1 decode."""
    levels = {str(l["concurrency"]): {k: l[k] for k in ("output_tokens_per_second", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "failed")}
              for l in report.get("levels", [])}
    wide = decode_rows(RESULTS["steps"].get("ours_wide_batches") or {})
    b1 = wide.get("1")
    out = {"levels": levels}
    if b1:
        if "16" in wide:
            out["decode_batch16_over_batch1"] = wide["16"] / b1
        if "64" in levels:
            out["concurrency64_over_batch1"] = levels["64"]["output_tokens_per_second"] / b1
    return out


def decode_rows(report):
    return {str(r["batch"]): r["tokens_per_second"] for r in report.get("rows", []) if r["test"].startswith("tg")}


def summary():
    s = RESULTS["steps"]
    bk = s.get("ours_bench_kernels") or {}
    variants = s.get("ours_variants") or {}
    copy = (bk.get("copy_bandwidth") or {}).get("gb_per_s")

    def decode_of(report):
        out = {}
        for r in report.get("rows", []):
            if r["test"].startswith("tg"):
                out[str(r["batch"])] = {"tok_s": r["tokens_per_second"], "tok_s_stddev": r["tokens_per_second_std_dev"], "ms_per_step": r["ms_per_step"],
                                        "launches_per_step": r["launches_per_step"], "host_us_per_step": r["host_us_per_step"]}
        return out

    per_variant = {v: decode_of(rep) for v, rep in variants.items()}
    winner = max(per_variant, key=lambda v: per_variant[v].get("1", {}).get("tok_s", 0)) if per_variant else None
    fused = winner is not None and winner != "baseline"
    pct = {}
    for key, (plain, normed, label) in MATVEC_ROWS.items():
        name = normed if fused else plain
        row = next((r for r in bk.get("rows", []) if r["kernel"] == name and r["batch"] == 1 and (label is None or label in r["shape"])), None)
        pct[key] = row["pct_copy_bandwidth"] if row else None
    attention = {}
    for r in bk.get("rows", []):
        if r["kernel"] == "attention" and r["shape"].startswith("decode seq"):
            keys = r["shape"].split()[2].rstrip(",")
            attention.setdefault(keys, {})[f"batch{r['batch']}"] = {"us": r["time_us"], "pct_copy_bandwidth": r["pct_copy_bandwidth"]}
    prefill = None
    if winner:
        prefill = next((r["tokens_per_second"] for r in variants[winner]["rows"] if r["test"].startswith("pp") and r["batch"] == 1), None)
    weight_bytes = next(iter(variants.values()))["weight_bytes"] if variants else None
    quant = s.get("ours_quantized") or {}

    def quant_summary(f):
        q = quant.get(f)
        if not q:
            return None
        dec = decode_of(q["bench_e2e"])
        base = per_variant.get(q["variant"], {}).get("1", {}).get("tok_s")
        rows = q["bench_kernels"].get("rows", [])
        matvec = {}
        for key, (plain, normed, label) in MATVEC_ROWS.items():
            name = (normed if q["variant"] != "baseline" else plain).replace("_fp16", "_" + f)
            row = next((r for r in rows if r["kernel"] == name and r["batch"] == 1 and (label is None or label in r["shape"])), None)
            matvec[key] = row["pct_copy_bandwidth"] if row else None
        logits = q.get("decode_logits_vs_fp32") or {}
        return {"variant": q["variant"], "weight_bytes": q["bench_e2e"].get("weight_bytes"), "decode": dec,
                "speedup_vs_fp16_batch1": (dec.get("1", {}).get("tok_s") / base) if base and dec.get("1") else None,
                "matvec_pct_of_copy": matvec,
                "decode_logits_vs_fp32": {k: logits.get(k) for k in ("positions", "max_abs_error", "max_error_over_spread", "mean_kl_divergence", "all_top1_agreement", "passed") if k in logits}}
    hf = (s.get("hf_timing") or {}).get("batch1", {}).get("tokens_per_second")
    summ = {
        "gpu": (s.get("versions") or {}).get("gpu") or (bk.get("device")),
        "commit": next(iter(variants.values()))["commit"] if variants else None,
        "copy_gb_per_s": copy,
        "weight_bytes_per_token": weight_bytes,
        "bound_tok_s_batch1": (copy * 1e9 / weight_bytes) if copy and weight_bytes else None,
        "winning_variant": winner,
        "decode": per_variant.get(winner, {}),
        "variants": per_variant,
        "matvec_pct_of_copy": pct,
        "attention_us": attention,
        "prefill_tok_s": prefill,
        "hf_decode_tok_s_batch1": hf,
        "variant_checks": variant_checks(s.get("ours_variant_checks") or {}),
        "decode_q8_0": quant_summary("q8_0"),
        "decode_q4_0": quant_summary("q4_0"),
        "decode_wide": {"variant": (s.get("ours_wide_batches") or {}).get("variant"), "decode": decode_of(s.get("ours_wide_batches") or {})},
        "serve": serve_summary(s.get("ours_serve") or {}),
    }
    (Path(ARGS.out) / "summary.json").write_text(json.dumps(summ, indent=1))
    return summ


# ---------------------------------------------------------------------------------------------
# 5. report

def fmt(x, d=1):
    return "n/a" if x is None else f"{x:.{d}f}"


def write_markdown():
    s, e = RESULTS["steps"], RESULTS["errors"]
    lines = ["# GPU check results", ""]
    gpu = (Path(ARGS.out) / "nvidia-smi.csv").read_text().strip().splitlines()[-1] if (Path(ARGS.out) / "nvidia-smi.csv").exists() else "?"
    lines.append(f"Device: {gpu}")
    if "versions" in s:
        lines.append(f"Versions: {s['versions']}")
    cb = s.get("copy_bandwidth")
    if cb:
        lines.append(f"Device-to-device copy (torch, 1 GiB, read + write): {cb['gb_per_s_read_plus_write']:.0f} GB/s")
    m = s.get("model")
    if m:
        lines.append(f"Model: Llama 3.2 1B config, random weights, embedding scaled: logit std {m['logit_std']:.2f}, median top-1/top-2 margin {m['median_margin']:.3f}")
    lg = s.get("ours_logits")
    if lg:
        lines += ["", "## Logits vs transformers fp32", "", "| path | max abs err | logit spread (std) | err/spread | top-1 decisive | top-1 all |", "|---|---|---|---|---|---|"]
        for k in ("prefill", "decode", "prefill_vs_decode"):
            v = lg[k]
            lines.append(f"| {k} | {v['max_abs_error']:.4f} | {v['reference_spread']:.3f} | {v['max_error_over_spread'] * 100:.2f}% | {v['decisive_top1_agreement']}/{v['decisive_positions']} | {v['all_top1_agreement']}/{v['positions']} |")
    rv = s.get("reference_variants")
    if rv:
        lines += ["", "## Where the difference comes from", "", "| comparison | max abs err | err/spread | top-1 decisive | top-1 all |", "|---|---|---|---|---|"]
        for k, v in rv.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {v['max_abs_error']:.4f} | {v['max_error_over_spread'] * 100:.2f}% | {v['decisive_top1_agreement']}/{v['decisive_positions']} | {v['all_top1_agreement']}/{v['positions']} |")
    bs = s.get("bisect")
    if bs:
        lines += ["", "## Bisection (max |error| per position vs transformers with fp16 KV)", ""] + [f"- {k}: {json.dumps(v)}" for k, v in bs.items()]
    dg = s.get("diagnose")
    if dg:
        lines += ["", "## Diagnosis (max |error| per position)", ""] + [f"- {k}: {json.dumps(v)}" for k, v in dg.items()]
    g = s.get("ours_generate")
    hf = s.get("hf_timing")
    if g:
        lines += ["", "## Greedy generation (128 new tokens)", "", "| run | decode tok/s | ms/step | identical to transformers fp32 | first divergence (step, ref margin, near-tie) |", "|---|---|---|---|---|"]
        for k, v in g.items():
            div = "; ".join("-" if d is None else f"{d['step']}, {fmt(d['reference_margin'], 3)}, {d['near_tie']}" for d in v["first_divergence"])
            lines.append(f"| {k} | {v['decode_tokens_per_second']:.1f} | {v['decode_ms_per_step']:.3f} | {v['identical']} | {div} |")
    if hf:
        lines.append("")
        for k, v in hf.items():
            lines.append(f"transformers bf16 eager generate {k}: {v['tokens_per_second']:.1f} tok/s ({v['ms_per_step']:.2f} ms/step)")
    variants = s.get("ours_variants")
    if variants:
        lines += ["", "## bench e2e per decode variant", "", "| variant | test | batch | tok/s | ms/step | weight GB/s | launches/step | host us/step |", "|---|---|---|---|---|---|---|---|"]
        for v, rep in variants.items():
            for r in rep["rows"]:
                lines.append(f"| {v} | {r['test']} | {r['batch']} | {r['tokens_per_second']:.1f} +- {r['tokens_per_second_std_dev']:.1f} | {r['ms_per_step']:.3f} | "
                             f"{fmt(r.get('weight_gb_per_second'))} | {r.get('launches_per_step') or ''} | {fmt(r.get('host_us_per_step'), 0) if r.get('host_us_per_step') is not None else ''} |")
    q = s.get("ours_quantized") or {}
    if q:
        lines += ["", "## Quantised weights (same run, quantised at load)", "", "| format | variant | batch | tok/s | ms/step | decode logits max err vs fp32 | top-1 vs fp32 |", "|---|---|---|---|---|---|---|"]
        for f, res in q.items():
            lg = res.get("decode_logits_vs_fp32") or {}
            for r in res["bench_e2e"]["rows"]:
                if r["test"].startswith("tg"):
                    lines.append(f"| {f} | {res['variant']} | {r['batch']} | {fmt(r['tokens_per_second'])} | {fmt(r['ms_per_step'], 3)} | {fmt(lg.get('max_abs_error'), 4)} | {lg.get('all_top1_agreement', 'n/a')}/{lg.get('positions', 'n/a')} |")
    checks = s.get("ours_variant_checks")
    if checks:
        lines += ["", "## Decode variants: correctness", "", "| variant | decode logits max err | top-1 | greedy b1 identical | greedy b4 identical |", "|---|---|---|---|---|"]
        for v, c in checks.items():
            d = c.get("decode_logits") or {}
            lines.append(f"| {v} | {fmt(d.get('max_abs_error'), 4)} | {d.get('all_top1_agreement', '')}/{d.get('positions', '')} | "
                         f"{c.get('greedy_b1', {}).get('identical')} | {c.get('greedy_b4', {}).get('identical')} |")
    summ = s.get("summary")
    if summ:
        lines += ["", "## summary.json", "", "```json", json.dumps({k: v for k, v in summ.items() if k != "variants"}, indent=1), "```"]
    mem = s.get("ours_memory")
    if mem and mem.get("allocated"):
        a = mem["allocated"]
        lines += ["", "## memory --allocate", "", f"formula total {mem['total_bytes']:,} B; allocator total {a['total']:,} B (difference {a['difference_from_formula']} B); "
                  f"cuMemGetInfo drop {a.get('device_measured_bytes')} B"]
    if e:
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in e.items()]
    (Path(ARGS.out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/ilgpu-work")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--target-logit-std", type=float, default=4.0)
    ap.add_argument("--bench-timeout", type=int, default=240)
    ap.add_argument("--pp", type=int, default=512, help="prompt length of the bench e2e pp test")
    ap.add_argument("--tg", type=int, default=128, help="generated length of the bench e2e tg test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="reference_variants,diagnose,bisect", help="comma-separated steps to skip (the diagnosis steps of the first run by default)")
    ap.add_argument("--cpu-smoke", action="store_true", help="check the script on the CPU accelerator with the demo model (no torch)")
    ARGS = ap.parse_args()
    Path(ARGS.out).mkdir(parents=True, exist_ok=True)
    Path(ARGS.work).mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, ARGS.skip.split(",")))

    if ARGS.cpu_smoke:
        global DEV
        DEV = "cpu"
        for name, fn in [("info", ours_info), ("model", smoke_model), ("ours_variant_checks", ours_variant_checks), ("ours_variants", ours_variants),
                         ("ours_quantized", ours_quantized), ("ours_wide_batches", ours_wide_batches), ("ours_serve", ours_serve), ("ours_bench_kernels", ours_bench_kernels), ("ours_memory", ours_memory), ("summary", summary)]:
            if name not in skip:
                step(name, fn)
        save()
        log("done (cpu smoke)")
        return

    import torch
    import transformers
    RESULTS["steps"]["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
                                    "gpu": torch.cuda.get_device_name(0)}
    plan = [("info", ours_info), ("copy_bandwidth", copy_bandwidth), ("model", build_model), ("reference", reference),
            ("hf_timing", hf_timing), ("ours_logits", ours_logits), ("reference_variants", reference_variants), ("diagnose", diagnose), ("ours_generate", ours_generate),
            ("ours_variant_checks", ours_variant_checks), ("ours_variants", ours_variants), ("ours_quantized", ours_quantized), ("ours_wide_batches", ours_wide_batches), ("ours_serve", ours_serve), ("ours_memory", ours_memory),
            ("ours_bench_kernels", ours_bench_kernels), ("ncu", ncu_profile), ("bisect", bisect), ("summary", summary)]
    for name, fn in plan:
        if name in skip:
            continue
        if name in ("bisect", "summary"):
            step(name, fn)
            continue
        if name in ("reference", "hf_timing") and "model" not in RESULTS["steps"]:
            continue
        if name.startswith("ours_") and name not in ("ours_info",) and "model_dir" not in RESULTS:
            continue
        if name in ("ours_logits", "ours_generate", "ours_variant_checks", "reference_variants", "diagnose", "ncu") and "ref" not in RESULTS:
            continue
        step(name, fn)
    write_markdown()
    save()
    log("done")


if __name__ == "__main__":
    main()
