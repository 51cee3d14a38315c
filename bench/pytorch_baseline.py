"""PyTorch side of bench/gpu-train.ts: the same measurements with transformers' GPT2LMHeadModel.

Model: GPT-2 124M (12 layers, 768 wide, 12 heads, 1024 positions, vocab 50260 = GPT-2 + the recipe's three
chat tokens), random init, dropout 0.1 (GPT2Config defaults), attention "sdpa". Optimizer: torch AdamW
(lr 2e-5, weight decay 0.01), gradient accumulation 4, clip 1.0 -- the recipe's settings. Precisions: fp32
(TF32 matmuls off, PyTorch's default and the H200 reference's setting; --tf32 turns them on, as ONNX Runtime's
CUDA EP has them by default) and bf16 autocast.

Measured:
  throughput   trained tokens/s (every position of B x T) for each --shapes entry and precision, over
               --steps optimizer steps after --warmup steps; peak memory (max_memory_allocated/reserved).
  dolly        batches of 8 padded to the longest (TRL's default collator), accumulation 4, on the lengths
               that gpu-train.ts wrote (--lengths: {"train": [...], "eval": [...]} in epoch order): times
               --dolly-micro micro-batches twice (first pass meets new shapes, second pass is warm), one full
               evaluation and one save (save_pretrained + optimizer state), and estimates 3 epochs as
               steps x warm time + evals (every 200 steps) + saves (every 500 steps).
Writes one JSON object to --out (and prints it). Needs torch and transformers; a missing one is reported as
{"error": ...} with exit status 3 so the caller can say why there is no comparison.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny model and shapes (checks the script, not speed)")
    p.add_argument("--shapes", default="8x512,32x512")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per throughput shape")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lengths", default=None, help="JSON {train, eval} lengths from gpu-train.ts; no dolly part without it")
    p.add_argument("--dolly-micro", type=int, default=120)
    p.add_argument("--dolly-precisions", default="bf16,fp32")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eval-steps", type=int, default=200)
    p.add_argument("--save-steps", type=int, default=500)
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in fp32 (ONNX Runtime's CUDA default)")
    p.add_argument("--out", default=None)
    return p.parse_args()


def fail(msg, out):
    res = {"error": msg}
    if out:
        with open(out, "w") as f:
            json.dump(res, f)
    print(json.dumps(res))
    sys.exit(3)


def main():
    a = parse_args()
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except Exception as e:  # noqa: BLE001 - report any import problem
        fail(f"PyTorch/transformers not importable: {e}", a.out)
    import transformers

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        fail("torch.cuda.is_available() is False", a.out)
    if cuda and a.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if a.smoke:
        sizes = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=2048)
    else:
        sizes = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50260)
    V = sizes["vocab_size"]
    cfg = GPT2Config(**sizes)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:  # noqa: BLE001 - older/newer config classes
        pass
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    res = {
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "model": sizes,
        "accum": a.accum,
        "tf32": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
        "throughput": {},
    }

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def micro(x, att, prec):
        lab = x if att is None else x.masked_fill(att == 0, -100)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = model(input_ids=x, attention_mask=att, labels=lab).loss
        (loss / a.accum).backward()
        return loss

    def opt_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # ---- throughput at fixed shapes ------------------------------------------------------------------
    for prec in a.precisions.split(","):
        for shape in a.shapes.split(","):
            B, T = (int(v) for v in shape.split("x"))
            key = f"{prec}_B{B}_T{T}"
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                x = torch.randint(0, V, (B, T), device=dev)
                for _ in range(a.warmup):
                    for _ in range(a.accum):
                        micro(x, None, prec)
                    opt_step()
                sync()
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    for _ in range(a.accum):
                        loss = micro(x, None, prec)
                    opt_step()
                sync()
                dt = time.perf_counter() - t0
                n_micro = a.steps * a.accum
                r = {"ms_per_micro": round(dt / n_micro * 1e3, 2), "tok_s": round(n_micro * B * T / dt), "loss": float(loss)}
                if cuda:
                    r["peak_alloc_GB"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
                    r["peak_reserved_GB"] = round(torch.cuda.max_memory_reserved(dev) / 1e9, 2)
            except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
                r = {"error": f"out of memory: {str(e).splitlines()[0]}"}
                opt.zero_grad(set_to_none=True)
            res["throughput"][key] = r
            print(key, r, flush=True)

    # ---- Dolly-shaped epochs, TRL's default padded batches ---------------------------------------------
    if a.lengths:
        with open(a.lengths) as f:
            L = json.load(f)
        train, ev = L["train"], L["eval"]
        B = 8
        batches = [train[i:i + B] for i in range(0, len(train), B)]
        eval_batches = [ev[i:i + B] for i in range(0, len(ev), B)]
        steps_per_epoch = math.ceil(len(batches) / a.accum)
        total_steps = steps_per_epoch * a.epochs
        n_evals = total_steps // a.eval_steps
        n_saves = total_steps // a.save_steps + (0 if total_steps % a.save_steps == 0 else 1)  # + the final save
        gen = torch.Generator(device="cpu").manual_seed(0)

        def padded(b):
            T = max(b)
            x = torch.randint(0, V, (len(b), T), generator=gen).to(dev)
            att = (torch.arange(T)[None, :] < torch.tensor(b)[:, None]).long().to(dev)
            return x, att

        def run(n, prec):
            for i in range(n):
                x, att = padded(batches[i % len(batches)])
                micro(x, att, prec)
                if i % a.accum == a.accum - 1:
                    opt_step()
            opt.zero_grad(set_to_none=True)

        dolly = {
            "train_examples": len(train), "eval_examples": len(ev), "micro_batches_per_epoch": len(batches),
            "optimizer_steps": total_steps, "evals": n_evals, "saves": n_saves,
            "real_tokens_per_epoch": int(sum(train)), "padded_tokens_per_epoch": int(sum(len(b) * max(b) for b in batches)),
        }
        for prec in a.dolly_precisions.split(","):
            n = min(a.dolly_micro, len(batches))
            sync(); t0 = time.perf_counter(); run(n, prec); sync(); cold = (time.perf_counter() - t0) / n
            sync(); t0 = time.perf_counter(); run(n, prec); sync(); warm = (time.perf_counter() - t0) / n
            model.eval()
            sync(); t0 = time.perf_counter()
            with torch.no_grad():
                for b in eval_batches:
                    x, att = padded(b)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                        model(input_ids=x, attention_mask=att, labels=x.masked_fill(att == 0, -100))
            sync(); t_eval = time.perf_counter() - t0
            model.train()
            tmp = tempfile.mkdtemp(prefix="pt-save-")
            t0 = time.perf_counter()
            model.save_pretrained(tmp)
            torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
            t_save = time.perf_counter() - t0
            shutil.rmtree(tmp, ignore_errors=True)
            train_s = warm * len(batches) * a.epochs
            dolly[prec] = {
                "ms_per_micro_cold": round(cold * 1e3, 2), "ms_per_micro_warm": round(warm * 1e3, 2),
                "eval_s": round(t_eval, 2), "save_s": round(t_save, 2),
                "est_train_s": round(train_s, 1),
                "est_3_epochs_s": round(train_s + n_evals * t_eval + n_saves * t_save, 1),
                "est_3_epochs_cold_s": round(cold * len(batches) * a.epochs + n_evals * t_eval + n_saves * t_save, 1),
                "real_tok_s": round(dolly["real_tokens_per_epoch"] / (warm * len(batches))),
            }
            print("dolly", prec, dolly[prec], flush=True)
        res["dolly_padded"] = dolly

    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
