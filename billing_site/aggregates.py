"""Aggregates that keep money exact on every database."""

from decimal import Decimal

from django.db.models import Sum


class MoneySum(Sum):
    """`Sum` of a DecimalField, rounded back to the field's decimal places.

    SQLite has no decimal arithmetic: it adds in binary floating point and Django reads the result
    with 15 significant digits and, for an aggregate (unlike a column), no rounding, so 3 × 2.33
    can come back as 6.98999999999999. Amounts carry at most 4 places, so rounding the sum to them
    restores the exact value for any sum below 10¹¹ (15 digits); PostgreSQL sums decimals exactly
    and the rounding changes nothing there.
    """

    def get_db_converters(self, connection):
        places = Decimal(1).scaleb(-self.output_field.decimal_places)

        def exact(value, expression, connection):
            return None if value is None else value.quantize(places)

        return [*super().get_db_converters(connection), exact]
