"""``python -m generator.datasets import-csv`` with the data policy applied row by row, so a row the
policy would refuse (a licence it does not allow, a required attribution missing) is left out and
reported instead of making the policy refuse the whole set when training starts."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from generator.datasets import PreparationError, import_csv
from policies import DataPolicy, Outcome, PolicyError
from stackgan_django.governance import current_policies


def policy_row_check(policy: DataPolicy):
    """A row check for import_csv: the data policy's refusal of that one row, or None."""

    def check(row: dict[str, str], row_number: int) -> str | None:
        item = {key: (row.get(key) or "").strip() for key in ("file", "license", "attribution", "training_permission")}
        item.update(image=item.pop("file"), line=row_number)
        verdict = policy.check_items([item])
        # data.empty only says this one row is not trainable (e.g. training not allowed); the set decides.
        refusals = [d.message for d in verdict.decisions if d.outcome is Outcome.DENY and d.rule_id != "data.empty"]
        return f"the data policy refuses it: {refusals[0]}" if refusals else None

    return check


class Command(BaseCommand):
    help = ("Turn a folder of images and a CSV into a dataset (as `python -m generator.datasets import-csv`), "
            "leaving out and reporting each row the data policy would refuse.")

    def add_arguments(self, parser):
        parser.add_argument("--images", type=Path, required=True)
        parser.add_argument("--csv", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--overwrite", action="store_true", help="write over a folder that already holds files")

    def handle(self, *args, images, csv, out, overwrite, **options):
        try:
            check = policy_row_check(current_policies().data)
            written, errors = import_csv(images, csv, out, overwrite=overwrite, row_check=check)
        except (PreparationError, PolicyError) as exc:
            raise CommandError(str(exc)) from exc
        for error in errors:
            self.stdout.write(f"  skipped {error}")
        self.stdout.write(f"{written} rows written to {out / 'manifest.jsonl'}, {len(errors)} rows skipped")
        if not written:
            raise CommandError("no row could be imported")
