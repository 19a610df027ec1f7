// Type-checks code written against the types openapi-typescript generated from
// openapi/openapi.json (`tollgate.d.ts`, next to this file when the test runs).
import type { components, paths, operations } from "./tollgate";

type Session = components["schemas"]["Session"];
type Problem = components["schemas"]["Problem"];
type Page =
  paths["/v1/sessions"]["get"]["responses"][200]["content"]["application/json"];
type NotFound =
  paths["/v1/sessions/{id}"]["get"]["responses"][404]["content"]["application/problem+json"];
type ListQuery = operations["listSessions"]["parameters"]["query"];

const session: Session = {
  id: "s1",
  call_id: "c1",
  caller: "alice",
  service: "service1@portal.com",
  app_server: "shop1",
  state: "confirmed",
  created_at: "2026-12-01T09:00:00.000Z",
  node: "node-1",
  time_charge: { currency: "EUR", amount: 230 },
};
type NewCharge = components["schemas"]["NewCharge"];
type Charge =
  paths["/v1/sessions/{id}/charges"]["post"]["responses"][201]["content"]["application/json"];
type ChargeHeaders = operations["createCharge"]["parameters"]["header"];
const newCharge: NewCharge = { description: "Barolo", unit_amount: 1200, quantity: 2, currency: "EUR" };
const headers: ChargeHeaders = { "Idempotency-Key": "order-1042" };
const charge: Charge = {
  id: "ch_1",
  session_id: "s1",
  user_id: "u1",
  app_server_id: "a1",
  description: "Barolo",
  unit_amount: 1200,
  quantity: 2,
  amount: 2400,
  currency: "EUR",
  source: "rest",
  created_at: "2026-12-01T09:00:00.000Z",
};
type Statement = operations["getStatement"]["responses"][200]["content"]["application/json"];
const totals: Statement["totals"] = [{ currency: "EUR", amount: 2400 }];
const page: Page = { items: [session], next_cursor: null };
const problem: NotFound = {
  type: "urn:tollgate:problem:not-found",
  title: "Not found",
  status: 404,
  detail: "no session s2",
};
const errors: Problem["errors"] = [{ field: "cursor", message: "bad" }];
const query: ListQuery = { state: "terminated", limit: 10, cursor: "abc" };

export const checked = [page, problem, errors, query, newCharge, headers, charge, totals];
