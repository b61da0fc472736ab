"""Dead letters: nodes that will not be attempted again, listed and re-driven through the API."""
from peewee import *


def up(migrator, db):
    # Stand-ins for the tables the foreign keys point at (created by 0001_initial).
    class Workspace(Model):
        class Meta:
            database = db
            table_name = 'workspace'

    class Flow(Model):
        class Meta:
            database = db
            table_name = 'flow'

    class Run(Model):
        id = BigAutoField()
        class Meta:
            database = db
            table_name = 'run'

    class NodeRun(Model):
        id = BigAutoField()
        class Meta:
            database = db
            table_name = 'node_run'

    class DeadLetter(Model):
        id = BigAutoField()
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        flow = ForeignKeyField(Flow, on_delete='CASCADE')
        run = ForeignKeyField(Run, on_delete='CASCADE')
        node_run = ForeignKeyField(NodeRun, on_delete='CASCADE')
        node_id = CharField(max_length=64)
        attempts = IntegerField()
        error = JSONField(null=True)
        status = CharField(index=True, max_length=16, default='open')
        created_at = DateTimeField(index=True)
        redriven_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'dead_letter'
    db.create_tables([DeadLetter])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('dead_letter'))
