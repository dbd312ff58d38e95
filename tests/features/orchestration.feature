Feature: Automated workflow orchestration
  Once a feature's task spec is written, one call runs the whole workflow: the orchestrator
  plans, the tester writes failing tests, the implementer makes them pass and the verifier
  reviews, each as its own agent session, handing over through checkpoint files.

  Scenario: Automated workflow orchestration
    Given the feature "test-auth" has been initialized with a written TASK_SPEC.md
    When an MCP client calls tmops_start_orchestration for "test-auth"
    And follows it with tmops_get_status until the run ends
    Then tmops_get_status says "test-auth" is completed
    And the orchestrator, tester, implementer and verifier ran in that order, one at a time
    And each phase's completion checkpoint was detected and accepted
    And the tests were committed on "feature/test-auth" before the code
    And SUMMARY.md and metrics.json were written for the run
