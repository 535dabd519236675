import hashlib
from pathlib import Path

from django.db import migrations, models


def record_index_hashes(apps, schema_editor):
    """Model versions registered before this field get the hash of the index their folder holds now:
    the nearest thing to what was vetted, and from here on a replaced or removed index is refused."""
    ModelVersion = apps.get_model("stackgan_django", "ModelVersion")
    for model_version in ModelVersion.objects.all().iterator():
        path = Path(model_version.checkpoint_path) / "near_copies.json"
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        except OSError:
            digest = ""
        ModelVersion.objects.filter(pk=model_version.pk).update(near_copy_index_sha256=digest)


class Migration(migrations.Migration):

    dependencies = [
        ("stackgan_django", "0004_api"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="near_copy_index_sha256",
            field=models.CharField(blank=True, help_text="SHA-256 of the folder's near_copies.json when registered; empty if it had none", max_length=64),
        ),
        migrations.RunPython(record_index_hashes, migrations.RunPython.noop),
    ]
