"""contacts.crm_id: the CRM's own id of a contact

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:00:00

Why: activities and handover tasks attach to the CRM's contact record, and a privacy delete must reach the CRM
after our contact row (and its phone number) is gone, so the CRM id is kept next to the contact.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crm_id", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("crm_id")
