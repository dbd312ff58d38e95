Feature: Initialize a feature via MCP
  An MCP client such as Claude Code prepares a feature for the test-first workflow: a branch
  of its own, a worktree to work in, and the TeamOps v6 folders with a task spec to fill in.

  Scenario: Initialize feature via MCP
    Given an MCP client connected to tmops in a git project
    When the client calls tmops_init_feature with the feature name "test-auth"
    Then the branch "feature/test-auth" exists in the project
    And the worktree of "test-auth" is checked out on that branch
    And the run folder ".tmops/test-auth/runs/initial" holds TASK_SPEC.md and checkpoints/
    And the answer names the branch, the worktree, the task spec and the checkpoint folder
    And the answer says what to do next
    And the feature's initialization is recorded as an event
