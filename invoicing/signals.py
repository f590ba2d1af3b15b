"""What other apps may react to without invoicing importing them (imports point inward).

`invoice_issued(invoice=…)` is sent inside the transaction that issues the invoice, after it is
numbered and saved: a receiver's writes commit or roll back with the issue. Payments uses it to
queue the charge of the customer's default payment method.
"""

from django.dispatch import Signal

invoice_issued = Signal()
