"""Security: a denylist of access tokens revoked by logout before they expire."""
from peewee import *


def up(migrator, db):
    class User(Model):
        class Meta:
            database = db
            table_name = 'user'

    class RevokedAccessToken(Model):
        jti = CharField(unique=True, max_length=64)
        user = ForeignKeyField(User, on_delete='CASCADE')
        expires_at = DateTimeField(index=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'revoked_access_token'
    db.create_tables([RevokedAccessToken])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('revoked_access_token'))
