"""Triggers: schedule slot claims, rotated webhook tokens, and the delivery log's answer columns."""
from peewee import *


def up(migrator, db):
    class Trigger(Model):
        class Meta:
            database = db
            table_name = 'trigger'

    class Run(Model):
        id = BigAutoField()
        class Meta:
            database = db
            table_name = 'run'

    class ScheduleSlot(Model):
        id = BigAutoField()
        trigger = ForeignKeyField(Trigger, on_delete='CASCADE')
        slot_at = DateTimeField()
        status = CharField(max_length=16, default='fired')
        run = ForeignKeyField(Run, null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'schedule_slot'
            indexes = ((('trigger', 'slot_at'), True),)

    class TriggerToken(Model):
        trigger = ForeignKeyField(Trigger, on_delete='CASCADE')
        token = CharField(unique=True, max_length=64)
        expires_at = DateTimeField(index=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'webhook_token'
    db.create_tables([ScheduleSlot, TriggerToken])
    migrator.migrate(
        migrator.add_column('delivery', 'status_code', IntegerField(null=True)),
        migrator.add_column('delivery', 'error', TextField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column('delivery', 'error'),
        migrator.drop_column('delivery', 'status_code'),
        migrator.drop_table('webhook_token'),
        migrator.drop_table('schedule_slot'),
    )
