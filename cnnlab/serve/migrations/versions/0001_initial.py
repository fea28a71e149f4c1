"""The competition tables: teams (hashed tokens) and submissions (queue and results).

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

import sqlalchemy as sa
from alembic import op

from cnnlab.serve.db import UTC

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "competition_teams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("competition", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.UniqueConstraint("competition", "name"),
    )
    op.create_table(
        "competition_submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("competition", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("competition_teams.id"), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("file_name", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("csv_sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
    )
    op.create_index("ix_competition_submissions_queue", "competition_submissions", ["competition", "status", "id"])
    op.create_index("ix_competition_submissions_team", "competition_submissions", ["team_id", "created_at"])


def downgrade():
    op.drop_table("competition_submissions")
    op.drop_table("competition_teams")
