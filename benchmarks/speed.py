"""Generation speed against the hardware's limit, batching across requests, governance cost per
image through the real worker task, and first-request latency after worker start. Every speed is
set against a baseline measured in the same run (the plain eager model, one-by-one processing, a
warm request), so the ratios hold on a busy machine even when the absolute figures do not.

    python benchmarks/speed.py [--checkpoint models/default] [--device cpu|cuda] [--compile]
                               [--ngf64] [--rounds 3] [--json results.json | --json -]

Sections (each can be skipped with --skip NAME): ceiling, inference, batching, governance, start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTIONS = ("ceiling", "inference", "batching", "governance", "start")
BATCH = 16
CAPTION = "a red apple with a green leaf, flat style"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Timing


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(functions: dict[str, Callable[[], Any]], rounds: int, device) -> dict[str, float]:
    """Seconds per call of each function: the fastest of ``rounds`` calls, measured in alternation
    (A B C A B C ...) after one warm-up call each. Other processes only ever add time, so the
    fastest round is the least disturbed one, and alternation spreads the load over all of them."""
    for fn in functions.values():
        fn()
    synchronise(device)
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


# ---------------------------------------------------------------------------------------------
# Ceiling


def ceiling_product(device) -> tuple[Callable[[], Any], float]:
    """A large fp32 square matrix product (the most this device does on dense work) and its FLOPs."""
    import torch

    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return (lambda: a @ b), 2.0 * size**3


def measure_ceiling(device, rounds: int) -> dict[str, Any]:
    product, flops = ceiling_product(device)
    seconds = interleaved_times({"mm": product}, max(rounds, 5), device)["mm"]
    return {"matrix_size": 8192 if device.type == "cuda" else 2048, "gflops": flops / seconds / 1e9}


# ---------------------------------------------------------------------------------------------
# Inference


def load_generator(checkpoint: Path, branches: int | None, ngf: int | None, device):
    """The checkpoint's generator (its first ``branches`` scales), eval mode. With ``ngf`` a
    freshly initialised model of that width instead (speed does not depend on the weights)."""
    import torch

    from generator.checkpoint import WEIGHTS_FILE, read_config
    from generator.models import build_generator, init_weights

    config, _ = read_config(checkpoint)
    if ngf is not None:
        config = config.replace(ngf=ngf)
    if branches is not None:
        config = config.replace(branches=branches)
    model = build_generator(config)
    if ngf is None:
        from safetensors.torch import load_file

        state = load_file(str(checkpoint / WEIGHTS_FILE))
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own})
    else:
        torch.manual_seed(0)
        init_weights(model)
    return model.to(device).eval(), config


def generator_inputs(config, batch: int, device):
    import torch

    rng = torch.Generator().manual_seed(1)
    z = torch.randn(batch, config.z_dim, generator=rng)
    text = torch.nn.functional.normalize(torch.randn(batch, config.text_dim, generator=rng), dim=1)
    noise = torch.randn(batch, config.cond_dim, generator=rng)
    return z.to(device), text.to(device), noise.to(device)


def flops_per_image(model, inputs) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops() / inputs[0].shape[0]


def inference_variants(device, compile_too: bool) -> dict[str, Any]:
    """Cumulative steps, each measured against the eager model: what each rewrite adds."""
    from generator.fast_inference import InferenceOptions

    none = InferenceOptions.none()
    steps = {
        "eager (baseline)": None,
        "+ batch norm folded": none.replace(fold_batch_norm=True),
        "+ phase up-sampling": none.replace(fold_batch_norm=True, phase_upsampling=True),
        "+ constant condition folded": none.replace(fold_batch_norm=True, phase_upsampling=True, fold_constant_condition=True),
        "+ fused GLU": none.replace(fold_batch_norm=True, phase_upsampling=True, fold_constant_condition=True, fuse_glu=True),
        "+ channels-last (optimised)": InferenceOptions(half_precision=False),
    }
    if device.type == "cuda":
        steps["+ float16 (CUDA)"] = InferenceOptions(half_precision=True)
    if compile_too:
        steps["+ torch.compile"] = InferenceOptions(compile=True)
    return steps


def run_inference(args, device) -> list[dict[str, Any]]:
    import torch

    from generator.fast_inference import check_equivalence, optimize_generator

    rows = []
    cases = [(size_index, None) for size_index in (1, 2, 3)]
    if args.ngf64:
        cases.append((3, 64))
    for branches, ngf in cases:
        model, config = load_generator(args.checkpoint, branches, ngf, device)
        size = config.output_size
        inputs = generator_inputs(config, BATCH, device)
        all_steps = inference_variants(device, args.compile)
        # The full ladder at 256 px with the shipped model; elsewhere eager against optimised.
        names = list(all_steps) if (branches == 3 and ngf is None) else \
            [n for n in all_steps if n in ("eager (baseline)", "+ channels-last (optimised)", "+ float16 (CUDA)", "+ torch.compile")]
        log(f"inference: {size} px, ngf {config.ngf}, batch {BATCH}: building {len(names)} variants")
        models, flops, differences = {}, {}, {}
        for name in names:
            options = all_steps[name]
            if options is None:
                models[name] = model
            else:
                started = time.perf_counter()
                models[name], _ = optimize_generator(model, options, example_inputs=generator_inputs(config, 2, device))
                if options.compile:
                    log(f"  compiled in {time.perf_counter() - started:.0f} s")
            counted = models[name]._orig_mod if hasattr(models[name], "_orig_mod") else models[name]
            flops[name] = flops_per_image(counted, inputs)
            differences[name] = check_equivalence(model, models[name], inputs) if options is not None else 0.0
        # The ceiling is timed in the same alternation, so its share is against the machine as it
        # was during these rounds, not at some quieter or busier moment.
        product, product_flops = ceiling_product(device)
        functions = {n: (lambda m=models[n], x=inputs: m(*x)) for n in names}
        functions["ceiling"] = product
        with torch.inference_mode():
            seconds = interleaved_times(functions, args.rounds, device)
        ceiling_now = product_flops / seconds["ceiling"]
        base = seconds["eager (baseline)"]
        for name in names:
            rate = BATCH / seconds[name]
            rows.append({"size": size, "ngf": config.ngf, "variant": name, "batch": BATCH, "images_per_s": rate,
                         "speedup": base / seconds[name], "gflop_per_image": flops[name] / 1e9,
                         "ceiling_gflops": ceiling_now / 1e9, "ceiling_share": flops[name] * rate / ceiling_now,
                         "max_abs_diff": differences[name]})
        del models
    return rows


# ---------------------------------------------------------------------------------------------
# Governance and worker start: Django in a scratch folder, the real task, a fresh process


DJANGO_BOOT = """
import os, sys, time, json
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
"""

START_PROBE = DJANGO_BOOT + """
from django.conf import settings
from django.test import override_settings
backend_path, warm, requests, images = sys.argv[1], sys.argv[2] == "warm", int(sys.argv[3]), int(sys.argv[4])
with override_settings(STACKGAN={{**settings.STACKGAN, "GENERATOR_BACKEND": backend_path}}):
    from stackgan_django import services, tasks
    from stackgan_django.worker_start import wait_for_warm_up, warm_up_worker
    warm_seconds = None
    if warm:
        started = time.perf_counter()
        warm_up_worker()  # what worker_process_init runs
        wait_for_warm_up()
        warm_seconds = time.perf_counter() - started
    # A different caption each time, as editors send: a repeated one would find its embedding cached.
    captions = ["a red apple", "a grinning face", "a dog face", "an automobile", "a blue heart", "a birthday cake"]
    latencies = []
    for i in range(requests):
        caption = captions[i % len(captions)] + ", flat style" + " again" * (i // len(captions))
        request = services.submit_request(caption=caption, num_images=images, seed=100 + i)
        started = time.perf_counter()
        assert tasks.generate(request.pk) == "done"
        latencies.append(time.perf_counter() - started)
print(json.dumps({{"warm_up_seconds": warm_seconds, "latencies": latencies}}))
"""


def django_environment(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"STACKGAN_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "config.settings",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    # A scratch SQLite database: the benchmark never writes to a configured one.
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.pop("DJANGO_STORAGE_BACKEND", None)
    return env


def prepare_django(var_dir: Path, checkpoint: Path) -> None:
    """Migrate the scratch database and register + activate the checkpoint (in a child process,
    so this process can set up Django itself afterwards on the same folder)."""
    script = DJANGO_BOOT.format(root=str(ROOT)) + f"""
from django.core.management import call_command
call_command("migrate", verbosity=0)
from stackgan_django import services
services.register_model_version("bench", {str(checkpoint)!r}, activate=True)
"""
    subprocess.run([sys.executable, "-c", script], env=django_environment(var_dir), check=True, timeout=600)


def setup_django(var_dir: Path) -> None:
    """This process on the scratch database and folder (after the fresh-process probes ran)."""
    os.environ.update({k: v for k, v in django_environment(var_dir).items() if k.startswith(("STACKGAN", "DJANGO"))})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_STORAGE_BACKEND"):
        os.environ.pop(name, None)
    import django

    django.setup()


class Captions:
    """A new caption for every request (as editors send them), so the text encoder runs each time
    and no embedding is found in the pipeline's cache."""

    def __init__(self, tag: str):
        self.tag, self.count = tag, 0

    def __call__(self) -> str:
        self.count += 1
        return f"{CAPTION}, {self.tag} {self.count}"


def run_requests(requests: int, images: int, batch_size: int, captions: Captions, checked: list[float]) -> dict[str, float]:
    """Submit ``requests`` waiting requests, then run ``tasks.generate`` for each, as a worker takes
    their messages one after another (with batching, the first draws the others in its pass and the
    later messages find them done). Returns the wall time of the tasks, the generator's share
    (``compute_seconds``) and the time the output policy took (``checked``, filled by the wrapper)."""
    from stackgan_django import services, tasks
    from stackgan_django.models import GenerationRequest

    ids = [services.submit_request(caption=captions(), num_images=images, seed=1000 + captions.count).pk
           for _ in range(requests)]
    checked.clear()
    with override_stackgan(GENERATION_BATCH_SIZE=batch_size):
        started = time.perf_counter()
        outcomes = [tasks.generate(pk) for pk in ids]
        wall = time.perf_counter() - started
    rows = list(GenerationRequest.objects.filter(pk__in=ids))
    if any(row.state != GenerationRequest.State.DONE for row in rows) or "done" not in outcomes:
        raise RuntimeError(f"the tasks ended {outcomes}: {[row.error for row in rows if row.error]}")
    return {"wall": wall, "compute": sum(row.compute_seconds for row in rows), "output_policy": sum(checked),
            "images": requests * images}


def override_stackgan(**values: Any):
    from django.conf import settings
    from django.test import override_settings

    return override_settings(STACKGAN={**settings.STACKGAN, **values})


def timed_output_policy() -> list[float]:
    """Time the output policy inside the real task: the worker's own check function, wrapped (the
    near-copy check in policies/ is measured apart from the rest of the governance)."""
    from stackgan_django.services import worker

    seconds: list[float] = []
    real = worker.check_batch

    def check_batch(jobs):
        started = time.perf_counter()
        try:
            return real(jobs)
        finally:
            seconds.append(time.perf_counter() - started)

    worker.check_batch = check_batch
    return seconds


def run_batching(args, device) -> list[dict[str, Any]]:
    """Throughput through the real worker path (services.submit_request, tasks.generate) with 1, 4
    and 16 waiting one-image requests: batching off (GENERATION_BATCH_SIZE 1: one forward pass and
    one pipeline per request) against on (16: the first task draws all of them in one pass, then
    checks, signs and stores each). Rounds alternate; the fastest of each is kept."""
    import numpy as np

    from stackgan_django import generation, services

    checked = timed_output_policy()
    with override_stackgan(DEVICE=str(device), GENERATOR_BACKEND="stackgan_django.fast_backend.OptimisedPipelineBackend"):
        generation._backends.clear()
        backend = generation.backend_for(services.active_model_version())
        backend.warm_up()
        captions = Captions("batching")
        run_requests(2, 1, 16, captions, checked)  # the task path once, untimed
        rows = []
        for waiting in (1, 4, 16):
            log(f"batching: {waiting} waiting requests of one 256 px image through tasks.generate")
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for label, size in (("one-by-one", 1), ("batched", 16)):
                    run = run_requests(waiting, 1, size, captions, checked)
                    if label not in best or run["wall"] < best[label]["wall"]:
                        best[label] = run
            # The same captions and seeds drawn one by one and in one pass: the largest pixel difference.
            jobs = [(f"{CAPTION}, check {i}", [2000 + i]) for i in range(waiting)]
            together = generation.generate_batch(backend, jobs)
            difference = max(int(np.abs(np.asarray(backend.generate(c, s)[0].image, dtype=int)
                                        - np.asarray(t[0].image, dtype=int)).max()) for (c, s), t in zip(jobs, together))
            one, batched = best["one-by-one"], best["batched"]
            rows.append({"waiting_requests": waiting, "one_by_one_images_per_s": waiting / one["wall"],
                         "batched_images_per_s": waiting / batched["wall"], "speedup": one["wall"] / batched["wall"],
                         "batched_outside_share": (batched["wall"] - batched["compute"]) / batched["wall"],
                         "max_pixel_diff": difference})
    return rows


def generator_alone(backend, requests: int, images: int, batch_size: int, captions: Captions) -> float:
    """Seconds the generator alone takes for the work of one ``run_requests`` call: the same number
    of new captions and images, drawn as the task draws them (one pass per request one by one, passes
    of ``batch_size`` images batched), with no governance around it. The baseline of the governance's
    cost to the worker's throughput."""
    from stackgan_django.generation import generate_batch

    jobs = [(captions(), [1000 + captions.count * 100 + i for i in range(images)]) for _ in range(requests)]
    per_pass = max(1, batch_size // images)  # requests a batched pass holds, as claim_waiting_requests fills it
    started = time.perf_counter()
    if batch_size <= 1:
        for caption, seeds in jobs:
            backend.generate(caption, seeds)
    else:
        for first in range(0, len(jobs), per_pass):
            generate_batch(backend, jobs[first:first + per_pass])
    return time.perf_counter() - started


def run_governance(args, device) -> dict[str, Any]:
    """End-to-end worker time per image through the real task (tasks.generate, called as the worker
    calls it), split into the generator's time (request.compute_seconds), the output policy's, and
    everything else; with batching off and on, and with the next batch drawn while the last is
    governed (overlap); beside each, the generator alone on the same work in the same rounds, so the
    governance's cost to throughput reads the same whether or not it overlaps the generator; and each
    governance step alone through the real stamping functions, on the same images."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from stackgan_django import generation, services
    from stackgan_django.generation import backend_for
    from stackgan_django.governance import current_policies
    from stackgan_django.models import GenerationRequest
    from stackgan_django.worker_start import near_copy_index_loader

    checked = timed_output_policy()
    optimised = "stackgan_django.fast_backend.OptimisedPipelineBackend"
    # (label, backend, GENERATION_BATCH_SIZE, OVERLAP_GOVERNANCE)
    cases = (("eager generator", "stackgan_django.generation.PipelineBackend", 1, False),
             ("optimised generator", optimised, 1, False),
             ("optimised, batched", optimised, 16, False),
             ("batched, overlapped", optimised, 16, True))
    results: dict[str, Any] = {"images_per_request": args.images_per_request, "requests": args.requests, "backends": {}}
    model_version = services.active_model_version()
    key = (model_version.pk, model_version.checkpoint_sha256)
    backends: dict[str, Any] = {}
    for _, path, _, _ in cases:  # both backends loaded and warmed once, then swapped in per run
        if path not in backends:
            with override_stackgan(DEVICE=str(device), GENERATOR_BACKEND=path):
                generation._backends.clear()  # the process keeps one backend per model version: load this one
                backends[path] = backend_for(model_version)
                if hasattr(backends[path], "warm_up"):
                    backends[path].warm_up()
                backends[path].generate("warm up", [0])
    captions = Captions("governance")
    best: dict[str, dict[str, float]] = {}
    alone: dict[tuple[str, int], float] = {}
    # Rounds alternate between the cases (A B C A B C ...), so a change of load on the shared
    # machine falls on all of them; the fastest round of each is kept.
    for round_index in range(args.rounds + 1):  # the first round is a warm-up of the task path itself
        for label, path, batch_size, overlap in cases:
            if round_index == 1:
                log(f"governance: {args.requests} requests x {args.images_per_request} images through tasks.generate, "
                    f"{label} (GENERATION_BATCH_SIZE {batch_size}, OVERLAP_GOVERNANCE {overlap}), {args.rounds} rounds")
            generation._backends.clear()
            generation._backends[key] = backends[path]
            with override_stackgan(DEVICE=str(device), GENERATOR_BACKEND=path, OVERLAP_GOVERNANCE=overlap):
                run = run_requests(args.requests if round_index else 1, args.images_per_request, batch_size, captions,
                                   checked)
            if round_index and (label not in best or run["wall"] < best[label]["wall"]):
                best[label] = run
            if round_index:  # the same work for every case of one generator and batch size: one baseline
                seconds = generator_alone(backends[path], args.requests, args.images_per_request, batch_size, captions)
                alone[(path, batch_size)] = min(alone.get((path, batch_size), seconds), seconds)
    for label, path, batch_size, overlap in cases:
        total, compute, policy, images = (best[label][k] for k in ("wall", "compute", "output_policy", "images"))
        baseline = alone[(path, batch_size)]
        outside = total - compute
        results["backends"][label] = {
            "batch_size": batch_size, "overlap": overlap,
            "end_to_end_ms_per_image": total / images * 1e3, "generator_ms_per_image": compute / images * 1e3,
            "outside_generator_ms_per_image": outside / images * 1e3, "outside_generator_share": outside / total,
            "output_policy_ms_per_image": policy / images * 1e3,
            "outside_without_output_policy_share": (outside - policy) / (total - policy),
            # The generator alone on the same work: what governance costs the worker's throughput.
            # (Overlapped, the split above means nothing: the drawing thread's time includes the
            # governance it ran beside; the cost below is the figure to read.)
            "generator_alone_ms_per_image": baseline / images * 1e3,
            "governance_cost_ms_per_image": (total - baseline) / images * 1e3,
            "governance_cost_share": (total - baseline) / total}
    backend = backends[optimised]
    # Each step alone, on generated images, through the functions the task calls: the output policy
    # one image at a time and over the batch (as the worker runs it), then the worker's stamping
    # (provenance.stamp_image) split into its parts, with both checks after signing: the full
    # validation (what every file got before, and still gets with VERIFY_AFTER_SIGNING "every")
    # and the structural check (every file but the first per signer with "first", the default).
    from stackgan_django.provenance import manifests, structure

    pipe_images = [item.image for item in backend.generate(CAPTION, list(range(8)))]
    policies = current_policies()
    request = GenerationRequest.objects.filter(model_version=model_version).first()
    steps: dict[str, list[float]] = {k: [] for k in (
        "output policy alone", "output policy in a batch of 8", "watermark + XMP", "sign", "verify in full",
        "structural check", "storage")}
    sizes = []
    started = time.perf_counter()
    near_copies = near_copy_index_loader()(model_version)  # the task reads it once per request
    results["near_copy_index_ms_per_request"] = (time.perf_counter() - started) * 1e3
    trusted = None
    from stackgan_django.services.worker import governance_threads

    limit = contextlib.ExitStack()
    limit.enter_context(governance_threads())  # as the worker runs its governance: numpy's BLAS on one thread
    for round_index in range(2):
        started = time.perf_counter()
        policies.output.check_images(pipe_images, near_copies)
        steps["output policy in a batch of 8"] += [(time.perf_counter() - started) / len(pipe_images)] * len(pipe_images)
        for index, image in enumerate(pipe_images):
            mark_id = 5000 + round_index * 100 + index
            started = time.perf_counter()
            policies.output.check_image(image, near_copies)
            steps["output policy alone"].append(time.perf_counter() - started)
            started = time.perf_counter()
            png, pixels = manifests._mark_and_encode(image, mark_id)
            steps["watermark + XMP"].append(time.perf_counter() - started)
            started = time.perf_counter()
            manifest = manifests.generated_manifest(model_version=model_version, request=request, decisions=[],
                                                    mark_id=mark_id)
            signed = manifests._sign(manifest, png, "image/png", pixels=pixels)
            steps["sign"].append(time.perf_counter() - started)
            started = time.perf_counter()
            report = manifests._verify_in_full(signed, pixels)
            steps["verify in full"].append(time.perf_counter() - started)
            if report.state != "Trusted" or report.watermark.get("mark_id") != mark_id:
                raise RuntimeError(f"stamped image does not verify: {report.state} {report.watermark}")
            if trusted is None:
                trusted = manifests._TrustedSigner(structure.check_signed_png(signed, png).certificate, report,
                                                   time.monotonic())
            pixels.detection = None  # detected afresh, as for a new file
            started = time.perf_counter()
            found = structure.check_signed_png(signed, png)
            if found.certificate != trusted.certificate:
                raise RuntimeError("the structural check read another certificate")
            quick = manifests._structural_report(found, trusted.report, manifests._detect_mark(pixels))
            steps["structural check"].append(time.perf_counter() - started)
            if quick.to_dict()["manifests"][0]["assertions"] != report.to_dict()["manifests"][0]["assertions"]:
                raise RuntimeError("the structural check read other assertions than the full validation")
            started = time.perf_counter()
            name = default_storage.save(f"bench/{mark_id}.png", ContentFile(signed))
            steps["storage"].append(time.perf_counter() - started)
            default_storage.delete(name)
            sizes.append(len(signed))
    limit.close()
    results["steps_ms"] = {k: statistics.median(v) * 1e3 for k, v in steps.items()}
    results["signed_file_kb"] = statistics.median(sizes) / 1024
    return results


def run_start(args, var_dir: Path) -> dict[str, Any]:
    """First-request latency in a fresh process: with the worker-start warm-up, and without."""
    script = START_PROBE.format(root=str(ROOT))
    results = {}
    for label, backend, warm in (("optimised, warm-up at start", "stackgan_django.fast_backend.OptimisedPipelineBackend", "warm"),
                                 ("optimised, no warm-up", "stackgan_django.fast_backend.OptimisedPipelineBackend", "cold")):
        log(f"worker start: fresh process, {label}")
        done = subprocess.run([sys.executable, "-c", script, backend, warm, str(args.start_requests), str(args.images_per_request)],
                              env=django_environment(var_dir), capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"start probe failed:\n{done.stderr[-3000:]}")
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        first, warm_requests = probe["latencies"][0], probe["latencies"][1:]
        warm_median = statistics.median(warm_requests)
        results[label] = {"warm_up_seconds": probe["warm_up_seconds"], "first_request_s": first,
                          "warm_request_s": warm_median, "first_over_warm": first / warm_median}
    return results


# ---------------------------------------------------------------------------------------------
# Report


def print_report(results: dict[str, Any]) -> None:
    env = results["environment"]
    print(f"stackgan-django speed, {env['date']}: {env['device_name']} ({env['device']}), torch {env['torch']}, "
          f"{env['threads']} threads, checkpoint {env['checkpoint']}")
    print("Speeds are set against baselines measured in the same run (alternating rounds, fastest round). On a shared CPU")
    print("the absolute figures are noisy; the ratios hold better.")
    if "ceiling" in results:
        c = results["ceiling"]
        print(f"\nceiling: fp32 {c['matrix_size']}x{c['matrix_size']} matrix product, {c['gflops']:.1f} GFLOP/s")
    if "inference" in results:
        print(f"\n{'px':>4} {'ngf':>4} {'variant':30} {'batch':>5} {'images/s':>9} {'x eager':>8} {'GFLOP/img':>10} "
              f"{'of ceiling':>11} {'max|diff|':>10}")
        for r in results["inference"]:
            print(f"{r['size']:>4} {r['ngf']:>4} {r['variant']:30} {r['batch']:>5} {r['images_per_s']:>9.2f} {r['speedup']:>8.2f} "
                  f"{r['gflop_per_image']:>10.2f} {r['ceiling_share']:>10.1%} {r['max_abs_diff']:>10.1e}")
        print("GFLOP/img: multiply-adds x 2 actually executed by that variant; 'of ceiling': its GFLOP/s over the matrix")
        print("product's, timed in the same alternating rounds (ceiling during the rounds: "
              + ", ".join(f"{r['size']} px {r['ceiling_gflops']:.0f}" for r in results["inference"] if r["variant"].startswith("eager"))
              + " GFLOP/s);")
        print("max|diff|: largest difference from the eager model's images (range [-1, 1]).")
    if "batching" in results:
        print(f"\n{'waiting requests':>16} {'one-by-one img/s':>17} {'batched img/s':>14} {'speedup':>8} "
              f"{'batched outside':>16} {'max px diff':>12}")
        for r in results["batching"]:
            print(f"{r['waiting_requests']:>16} {r['one_by_one_images_per_s']:>17.2f} {r['batched_images_per_s']:>14.2f} "
                  f"{r['speedup']:>8.2f} {r['batched_outside_share']:>15.1%} {r['max_pixel_diff']:>12}")
        print("one 256 px image per request, optimised generator, through services.submit_request and tasks.generate")
        print("(output policy, signing, storage, database included): one-by-one = GENERATION_BATCH_SIZE 1; batched = 16,")
        print("the first task draws every waiting request in one forward pass. 'batched outside': share of the batched")
        print("wall time outside the generator. max px diff: same captions and seeds, one pass against one by one.")
    if "governance" in results:
        g = results["governance"]
        print(f"\nworker time per 256 px image through tasks.generate ({g['requests']} waiting requests x "
              f"{g['images_per_request']} images):")
        print(f"{'generator':22} {'batch':>5} {'end-to-end ms':>14} {'generator ms':>13} {'outside ms':>11} "
              f"{'outside share':>14} {'output policy ms':>17} {'share w/o policy':>17} {'alone ms':>9} {'cost share':>11}")
        for label, r in g["backends"].items():
            split = (f"{'-':>11} {'-':>14} {r['output_policy_ms_per_image']:>17.1f} {'-':>17}" if r["overlap"] else
                     f"{r['outside_generator_ms_per_image']:>11.1f} {r['outside_generator_share']:>13.1%} "
                     f"{r['output_policy_ms_per_image']:>17.1f} {r['outside_without_output_policy_share']:>16.1%}")
            print(f"{label:22} {r['batch_size']:>5} {r['end_to_end_ms_per_image']:>14.1f} {r['generator_ms_per_image']:>13.1f} "
                  f"{split} {r['generator_alone_ms_per_image']:>9.1f} {r['governance_cost_share']:>10.1%}")
        steps = ", ".join(f"{k} {v:.2f} ms" for k, v in g["steps_ms"].items())
        worker_path = sum(v for k, v in g["steps_ms"].items() if k not in ("output policy alone", "verify in full"))
        print(f"each step alone (median per image): {steps}; the worker's path (batch of 8, structural check) "
              f"{worker_path:.2f} ms; near-copy index {g['near_copy_index_ms_per_request']:.1f} ms per request; "
              f"signed file {g['signed_file_kb']:.0f} KB")
        print("'outside' is everything the task does besides the generator: output policy (with the near-copy check),")
        print("watermark, XMP, signing, verification, storage, and the database work (rows, audit events, progress).")
        print("'share w/o policy': the same without the output policy's time, measured inside the same tasks.")
        print("'overlapped': the next waiting batch drawn in a thread while the last is governed (OVERLAP_GOVERNANCE);")
        print("its 'generator ms' is the drawing thread's, slowed by the governance beside it, so 'outside' is not shown.")
        print("'alone ms': the generator alone on the same work in the same rounds; 'cost share': (end-to-end - alone)")
        print("/ end-to-end, what the governance costs the worker's throughput, overlapped or not.")
    if "start" in results:
        print(f"\n{'fresh worker process':30} {'warm-up s':>10} {'first request s':>16} {'warm request s':>15} {'first/warm':>11}")
        for label, r in results["start"].items():
            warm = f"{r['warm_up_seconds']:.1f}" if r["warm_up_seconds"] is not None else "-"
            print(f"{label:30} {warm:>10} {r['first_request_s']:>16.2f} {r['warm_request_s']:>15.2f} {r['first_over_warm']:>11.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per measurement (medians)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (minutes of compilation on a CPU)")
    parser.add_argument("--ngf64", action="store_true", help="also the 256 px case at ngf 64 (fresh weights)")
    parser.add_argument("--requests", type=int, default=16,
                        help="waiting requests through the real task, per generator (16 x 4 images: four batches, "
                             "so the overlapped case overlaps three of them)")
    parser.add_argument("--images-per-request", type=int, default=4)
    parser.add_argument("--start-requests", type=int, default=4, help="requests in the fresh-process probe (first + warm)")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS)
    parser.add_argument("--json", help="write the results as JSON to this file ('-': print JSON instead of the table)")
    args = parser.parse_args()
    if not (args.checkpoint / "config.json").is_file():
        parser.error(f"{args.checkpoint} is not a checkpoint folder (no config.json)")
    if args.start_requests < 2:
        parser.error("--start-requests must be at least 2 (the first request and a warm one)")

    import torch

    from generator.pipeline import default_device

    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is available")
    results: dict[str, Any] = {"environment": {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "checkpoint": str(args.checkpoint)}}
    started = time.perf_counter()
    if "ceiling" not in args.skip:
        results["ceiling"] = measure_ceiling(device, args.rounds)
    if "inference" not in args.skip:
        results["inference"] = run_inference(args, device)
    if {"batching", "governance", "start"} - set(args.skip):
        with tempfile.TemporaryDirectory(prefix="stackgan-bench-") as scratch:
            var_dir = Path(scratch)
            prepare_django(var_dir, args.checkpoint.resolve())
            if "start" not in args.skip:  # before this process loads Django and models
                results["start"] = run_start(args, var_dir)
            if {"batching", "governance"} - set(args.skip):
                setup_django(var_dir)
            if "batching" not in args.skip:
                results["batching"] = run_batching(args, device)
            if "governance" not in args.skip:
                results["governance"] = run_governance(args, device)
    results["environment"]["seconds"] = time.perf_counter() - started
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
            print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
