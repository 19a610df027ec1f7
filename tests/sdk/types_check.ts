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
  created_at: 1,
  node: "node-1",
};
const page: Page = { items: [session], next_cursor: null };
const problem: NotFound = {
  type: "urn:tollgate:problem:not-found",
  title: "Not found",
  status: 404,
  detail: "no session s2",
};
const errors: Problem["errors"] = [{ field: "cursor", message: "bad" }];
const query: ListQuery = { state: "terminated", limit: 10, cursor: "abc" };

export const checked = [page, problem, errors, query];
