"""Assets in every state, made the way the worker and the reviewers make them (real signing)."""

from __future__ import annotations

from PIL import Image

from policies import Verdict
from stackgan_django import services


def make_assets(user, count=2, caption="a red apple with a green leaf"):
    request = services.submit_request(caption=caption, num_images=count, user=user)
    services.start_request(request.pk)
    outputs = []
    for index in range(count):
        image = Image.effect_noise((64, 64), 50 + index).convert("RGB")
        outputs.append(services.stamp_output(request, services.GeneratedOutput(index, index, image, Verdict("output", "v"))))
    return services.finish_request(request.pk, outputs, 0.1)


def assets_in_every_state(editor, reviewer):
    """approved, pending, rejected, revoked (one request, so they are siblings)."""
    approved, pending, rejected, revoked = make_assets(editor, 4)
    services.approve_asset(approved.pk, reviewer)
    services.reject_asset(rejected.pk, reviewer, note="blurry")
    services.approve_asset(revoked.pk, reviewer)
    services.revoke_asset(revoked.pk, reviewer, note="rights holder objected")
    for asset in (approved, pending, rejected, revoked):
        asset.refresh_from_db()
    return approved, pending, rejected, revoked
