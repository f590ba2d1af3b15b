from django.db import migrations, models


def billed_from_start(apps, schema_editor):
    Subscription = apps.get_model("subscriptions", "Subscription")
    Subscription.objects.update(billed_from=models.F("starts_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0002_payment_terms_bound"),
    ]

    operations = [
        migrations.AddField(
            model_name="subscription",
            name="billed_from",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(billed_from_start, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="subscription",
            name="billed_from",
            field=models.DateTimeField(),
        ),
        migrations.AddField(
            model_name="subscription",
            name="catch_up_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="subscription",
            name="draft_stale",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="subscriptionphase",
            name="prorate",
            field=models.BooleanField(default=True),
        ),
    ]
