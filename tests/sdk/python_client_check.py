"""Drives a live relay through the Python client that openapi-python-client generated from
openapi/openapi.json: creates an application server and a service, reads sessions, and checks
that errors arrive as typed problem documents.

Then, as the session's application server, posts a charge (twice with one Idempotency-Key:
one charge) and reads the user's statement as the operator.

Usage: python python_client_check.py BASE_URL OPERATOR_KEY SESSION_ID SHOP_KEY USER_ID
(the generated package `tollgate_client` must be importable, e.g. through PYTHONPATH).
"""

import sys

from tollgate_client import AuthenticatedClient
from tollgate_client.api.app_servers import create_app_server
from tollgate_client.api.billing import create_charge, get_statement
from tollgate_client.api.services import create_service, get_service, list_services
from tollgate_client.api.sessions import get_session, list_sessions
from tollgate_client.models import (
    Charge,
    CreatedAppServer,
    NewCharge,
    Statement,
    NewAppServer,
    NewService,
    Problem,
    Service,
    ServiceList,
    Session,
    SessionPage,
    SessionStatus,
)


def main() -> None:
    base_url, operator_key, session_id, owner_key, user_id = sys.argv[1:6]
    client = AuthenticatedClient(base_url=base_url, token=operator_key)

    shop = create_app_server.sync(
        client=client, body=NewAppServer(name="pyshop", uri="sip:127.0.0.1:5099")
    )
    assert isinstance(shop, CreatedAppServer), shop
    assert shop.api_key.startswith("tgk_"), shop

    service = create_service.sync(
        client=client, body=NewService(name="pyservice", app_servers=["pyshop"])
    )
    assert isinstance(service, Service), service
    assert service.address == "pyservice@portal.com", service
    assert [a.name for a in service.app_servers] == ["pyshop"], service
    again = get_service.sync(service.id, client=client)
    assert isinstance(again, Service) and again.id == service.id, again
    listed = list_services.sync(client=client)
    assert isinstance(listed, ServiceList), listed
    assert "pyservice@portal.com" in [s.address for s in listed.items], listed

    page = list_sessions.sync(client=client, limit=1)
    assert isinstance(page, SessionPage), page
    assert [s.id for s in page.items] == [session_id], page
    session = get_session.sync(session_id, client=client)
    assert isinstance(session, Session), session
    assert session.state == SessionStatus.CONFIRMED, session
    assert session.caller == "alice", session
    assert isinstance(session.duration_ms, int) and session.duration_ms >= 0, session

    missing = get_session.sync("no-such-session", client=client)
    assert isinstance(missing, Problem) and missing.status == 404, missing
    bad = list_sessions.sync(client=client, cursor="garbage")
    assert isinstance(bad, Problem) and bad.status == 400, bad
    assert [e.field for e in bad.errors] == ["cursor"], bad

    # An application server's key reads nothing of another shop's.
    shop_client = AuthenticatedClient(base_url=base_url, token=shop.api_key)
    hidden = get_session.sync(session_id, client=shop_client)
    assert isinstance(hidden, Problem) and hidden.status == 404, hidden

    # The session's own application server charges an item, exactly once per key.
    owner = AuthenticatedClient(base_url=base_url, token=owner_key)
    wine = NewCharge(description="Barolo", unit_amount=1200, quantity=2, currency="EUR")
    charge = create_charge.sync(session_id, client=owner, body=wine, idempotency_key="sdk-1")
    assert isinstance(charge, Charge), charge
    assert charge.amount == 2400 and charge.source.value == "rest", charge
    again = create_charge.sync(session_id, client=owner, body=wine, idempotency_key="sdk-1")
    assert isinstance(again, Charge) and again.id == charge.id, again
    reused = create_charge.sync_detailed(
        session_id, client=owner, body=NewCharge(description="Barolo", unit_amount=1200,
                                                 quantity=3, currency="EUR"),
        idempotency_key="sdk-1")
    assert reused.status_code == 422 and isinstance(reused.parsed, Problem), reused

    statement = get_statement.sync(user_id, client=client)
    assert isinstance(statement, Statement), statement
    assert [(t.currency, t.amount) for t in statement.totals] == [("EUR", 2400)], statement
    assert [c.id for c in statement.charges] == [charge.id], statement

    print("python client: ok")


if __name__ == "__main__":
    main()
