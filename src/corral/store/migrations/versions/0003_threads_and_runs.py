"""threads as a resource (title, metadata, state), run identity, trace and input requests

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("updated_at", sa.String(32), nullable=True))
        batch.add_column(sa.Column("title", sa.Text, nullable=True))
        batch.add_column(sa.Column("metadata", sa.Text, nullable=True))
        batch.add_column(sa.Column("state", sa.Text, nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(256), nullable=True))
    op.execute("UPDATE threads SET updated_at = created_at")
    op.create_index("ix_threads_user_id_updated_at", "threads", ["user_id", "updated_at"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("identity", sa.Text, nullable=True))
        batch.add_column(sa.Column("trace", sa.Text, nullable=True))
        batch.add_column(sa.Column("input_request", sa.Text, nullable=True))
        batch.add_column(sa.Column("input_answer", sa.Text, nullable=True))
    op.create_index("ix_runs_user_id_status", "runs", ["user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_runs_user_id_status", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in ("input_answer", "input_request", "trace", "identity"):
            batch.drop_column(name)
    op.drop_index("ix_threads_user_id_updated_at", "threads")
    with op.batch_alter_table("threads") as batch:
        for name in ("external_id", "state", "metadata", "title", "updated_at"):
            batch.drop_column(name)
