Feature: Manual fallback at every phase
  When the automation fails in any phase, a person can do that phase by hand with the
  instructions tmops gives, and the workflow goes on from the checkpoint they wrote exactly as
  if an agent had written it.

  Scenario Outline: Manual fallback capability at the <phase> phase
    Given the feature "slugify" has been initialized with a written TASK_SPEC.md
    And the agent of the <phase> phase fails every time
    When the feature is started with "tmops start slugify --wait"
    Then the run stops failed at the <phase> phase and its status offers "tmops prompt"
    When a person reads "tmops prompt slugify <phase>" and does the <phase> work by hand
    And writes the <phase> phase's completion checkpoint named by the prompt
    And resumes with "tmops start slugify --resume --wait"
    Then the hand-written checkpoint is taken for the <phase> phase without running its agent
    And the run completes with every phase completed
    And the tests were committed on "feature/slugify" before the code

    Examples:
      | phase        |
      | orchestrator |
      | tester       |
      | implementer  |
      | verifier     |
