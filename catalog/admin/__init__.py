"""The catalog's admin pages, one module per concern; importing them registers them."""

from catalog.admin import contracts, customers, plans, taxes_and_coupons

__all__ = ["contracts", "customers", "plans", "taxes_and_coupons"]
