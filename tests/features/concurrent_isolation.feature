Feature: Concurrent feature isolation
  Two features developed at the same time each keep their own branch, worktree, checkpoints
  and state: nothing of one leaks into the other.

  Scenario: Concurrent feature isolation
    Given the features "auth-api" and "user-profile" are initialized with their task specs
    And the engine may run 2 features at once
    When both features are started with "tmops start"
    Then both runs complete
    And both runs were running at the same time
    And each feature's branch holds only its own commits and files
    And each feature's run folder and logs name only its own feature and worktree
