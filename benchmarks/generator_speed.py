"""Generator speed and memory: images per second at 64/128/256 px (batch 1 and 16), one training
step at batch 16, and the peak resident memory of a process holding the default pipeline and of a
training run, on the current device. Default widths (ngf 64, ndf 64) unless --ngf/--ndf say else.

    python benchmarks/generator_speed.py [--ngf 64] [--ndf 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEMORY_PIPELINE = """
import json, sys, torch
from generator import StackGANPipeline
pipe = StackGANPipeline.from_pretrained(sys.argv[1], device=sys.argv[2])
pipe(["a red apple"] * 4, seeds=[1, 2, 3, 4])
print(json.dumps({"rss_mb": peak_rss_mb()}))
"""

MEMORY_TRAINING = """
import json, sys
sys.path.insert(0, sys.argv[4])
from generator.config import StackGANConfig
from generator.train import Trainer, TrainingOptions
from tests.synthetic import make_shapes_dataset
data = make_shapes_dataset(sys.argv[1] + "/data", size=256, copies=2)
config = StackGANConfig(ngf=int(sys.argv[2]), ndf=int(sys.argv[3]))
trainer = Trainer(TrainingOptions(data=data, output=sys.argv[1] + "/run", steps=2, batch_size=16, config=config,
                                  sample_every=0, checkpoint_every=0, progress=False, device=sys.argv[5]))
trainer.run()
print(json.dumps({"rss_mb": peak_rss_mb()}))
"""

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its parent's peak.
PEAK_RSS = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch

    from generator.__main__ import init_untrained
    from generator.config import StackGANConfig
    from generator.losses import discriminator_loss, generator_adversarial_loss
    from generator.models import build_discriminators, build_generator
    from generator.pipeline import default_device

    device = torch.device(args.device) if args.device else default_device()
    config = StackGANConfig(ngf=args.ngf, ndf=args.ndf)
    generator = build_generator(config).to(device).eval()
    rows = []
    print(f"device: {device}  (torch {torch.__version__}, {torch.get_num_threads()} threads), ngf={args.ngf}, ndf={args.ndf}")
    with torch.inference_mode():
        for batch in (1, 16):
            z = torch.randn(batch, config.z_dim, device=device)
            text = torch.randn(batch, config.text_dim, device=device)
            for branches in (1, 2, 3):
                model = build_generator(config.replace(branches=branches)).to(device).eval()

                def run(model=model, z=z, text=text):
                    model(z, text)
                    if device.type == "cuda":
                        torch.cuda.synchronize()

                seconds = timed(run, args.repeats)
                rows.append((f"generate {config.image_sizes[branches - 1]} px", batch, batch / seconds, seconds))
    baseline = rows[0][2]

    discriminators = build_discriminators(config).to(device)
    generator.train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminators.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batch = 16
    reals = [torch.rand(batch, 3, s, s, device=device) * 2 - 1 for s in config.image_sizes]
    text = torch.randn(batch, config.text_dim, device=device)

    def train_step():
        fakes, mu, logvar = generator(torch.randn(batch, config.z_dim, device=device), text)
        loss_d = sum(discriminator_loss(d(r, mu.detach()), d(r, mu.detach().roll(1, 0)), d(f.detach(), mu.detach()))
                     for d, r, f in zip(discriminators, reals, fakes))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = sum(generator_adversarial_loss(d(f, mu)) for d, f in zip(discriminators, fakes))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step_seconds = timed(train_step, max(1, args.repeats - 1))

    with tempfile.TemporaryDirectory() as tmp:
        init_untrained(Path(tmp) / "ck", config, seed=0, text_encoder=None)
        pipeline_mb = json.loads(subprocess.run([sys.executable, "-c", PEAK_RSS + MEMORY_PIPELINE, str(Path(tmp) / "ck"), str(device)],
                                                capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        training_mb = json.loads(subprocess.run([sys.executable, "-c", PEAK_RSS + MEMORY_TRAINING, tmp, str(args.ngf), str(args.ndf),
                                                 str(ROOT), str(device)],
                                                capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

    print(f"\n{'what':24} {'batch':>5} {'images/s':>10} {'seconds':>9} {'vs 64px b1':>10}")
    for name, batch, rate, seconds in rows:
        print(f"{name:24} {batch:>5} {rate:>10.2f} {seconds:>9.4f} {rate / baseline:>10.2f}")
    print(f"{'train step 64-256 px':24} {16:>5} {16 / step_seconds:>10.2f} {step_seconds:>9.4f}")
    print(f"\npeak RSS, process holding the pipeline (text encoder included): {pipeline_mb['rss_mb']:.0f} MB (target < 2048)")
    print(f"peak RSS, training at batch 16 (256 px, 3 discriminators):      {training_mb['rss_mb']:.0f} MB (target < 8192)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
