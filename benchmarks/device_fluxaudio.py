"""The 470M FluxAudio on an accelerator: the golden forward's parity there (float32, and bf16
autocast against the same golden), and the time of a 10 s generation's network work (431 latents,
25 Euler steps, classifier-free guidance: a batch of cond + uncond rows per step).

Run: ``python benchmarks/device_fluxaudio.py GOLDEN_DIR [DEVICE]`` with GOLDEN_DIR the
``shared/data/resonate/fluxaudio_forward`` folder. Prints one line per check; on a CPU it runs the
parity check only (the timing is for accelerators).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_resonate_golden import fill_tensor, rel_l2

from resonate_train.model import fluxaudio_470m


def generate(net: torch.nn.Module, lat: torch.Tensor, f: torch.Tensor, fc: torch.Tensor, dtype) -> None:
    """25 Euler steps from t = 1 over the rows (the network's work of a guided generation)."""
    z = lat
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        for i in range(25):
            t = torch.full((len(lat),), 1 - i / 25, device=lat.device)
            z = z - 0.04 * net(z, t, f, fc).float()
    torch.cuda.synchronize()


def main(golden: Path, device: str) -> None:
    net = fluxaudio_470m()
    net.load_state_dict({k: fill_tensor(k, tuple(v.shape)) for k, v in net.state_dict().items()})
    net = net.to(device).eval()
    x, text_f, text_f_c = (
        torch.from_numpy(np.load(golden / f"in_{n}.npy")).to(device) for n in ("x", "text_f", "text_f_c")
    )
    for t, tf32 in (("03", True), ("03", False), ("09", False)):
        expected = np.load(golden / f"out_velocity_t{t}.npy")
        tt = torch.tensor([int(t) / 10], device=device)
        # cuDNN convolutions use TF32 by default on CUDA (10-bit mantissas): a different function
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            fp32 = net(x, tt, text_f, text_f_c).float().cpu().numpy()
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
                bf16 = net(x, tt, text_f, text_f_c).float().cpu().numpy()
        print(
            f"parity t=0.{t[1]} {device}: float32 rel-L2 {rel_l2(fp32, expected):.2e} max|d| "
            f"{np.abs(fp32 - expected).max():.2e}; bf16 autocast rel-L2 {rel_l2(bf16, expected):.2e}",
            flush=True,
        )
    if not device.startswith("cuda"):
        return
    for batch in (1, 8):
        for dtype in (torch.float32, torch.bfloat16):
            lat = torch.randn(2 * batch, 431, 40, device=device)
            f = text_f.expand(2 * batch, -1, -1).contiguous()
            fc = text_f_c.expand(2 * batch, -1).contiguous()

            generate(net, lat, f, fc, dtype)  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                generate(net, lat, f, fc, dtype)
                times.append(time.perf_counter() - start)
            print(
                f"10 s generation, {batch} prompt(s) (CFG rows {2 * batch}), 25 steps, "
                f"{str(dtype).split('.')[-1]}: median {np.median(times):.3f} s ({times})",
                flush=True,
            )
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        sys.argv[2] if len(sys.argv) > 2 else ("cuda" if torch.cuda.is_available() else "cpu"),
    )
