import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from stackgan_django.services import verify_file


class Command(BaseCommand):
    help = ("Verify an image file: its C2PA manifest against our trust anchors, our invisible watermark, "
            "and which asset it is. Exit status 0 Trusted, 1 otherwise.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--json", action="store_true", help="print the whole report as JSON")

    def handle(self, *args, file, json: bool = False, **options):
        path = Path(file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
        report = verify_file(data)
        if json:
            self.stdout.write(_dumps(report))
        else:
            self.stdout.write(render_report(report))
        if report["state"] != "Trusted":
            raise CommandError(f"{path}: {report['state']}", returncode=1)


def _dumps(report) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str)


def render_report(report: dict) -> str:
    lines = [f"provenance: {report['state']} - {report['message']}"]
    for failure in report.get("failures", []):
        lines.append(f"  failure {failure['code']}: {failure['explanation']}")
    for manifest in report.get("manifests", []):
        lines.append(f"  manifest {manifest['title']} signed by {manifest.get('signed_by')} at {manifest.get('signed_at')}")
        for label, data in manifest.get("assertions", {}).items():
            if label.startswith("c2pa.actions"):
                actions = ", ".join(f"{a.get('action')} ({a.get('digitalSourceType', '').rsplit('/', 1)[-1]})".replace(" ()", "")
                                    for a in (data or {}).get("actions", []))
                lines.append(f"    {label}: {actions}")
            elif label.startswith("org.stackgan-django"):
                lines.append(f"    {label}: {json.dumps(data, ensure_ascii=False)[:300]}")
        for ingredient in manifest.get("ingredients", []):
            lines.append(f"    ingredient {ingredient['title']} ({ingredient['relationship']})")
    mark = report.get("watermark", {})
    lines.append(f"watermark: {'found, id ' + str(mark.get('mark_id')) if mark.get('found') else 'not found'}"
                 f" (confidence {mark.get('confidence')})")
    asset = report.get("asset")
    lines.append(f"asset: #{asset['id']} {asset['state']}, found by {asset['found_by']}" if asset else "asset: none of ours")
    # The asset's state is not the file's: a copy found by its mark names the approved asset.
    if report.get("file"):
        lines.append(f"file: {report['file']} - {report['file_message']}")
    return "\n".join(lines)
