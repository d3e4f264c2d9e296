"""Engines: adapters that plug blockwise advantages into existing RL trainers.

    bae.engines.trl            BlockwiseGRPOTrainer, paper_grpo_config (TRL 1.16 GRPOTrainer)
    bae.engines.trl_rewards    bae's rewards as reward functions of a plain trl.GRPOTrainer
    bae.engines.verl           verl 0.9.1 (needs the separate verl environment)

Each engine takes a task (bae.tasks), scores every completion block by block, computes advantages
with bae.advantages over the gathered batch and hands per-token advantages (bae.objective) to the
engine's own clipped loss; generation, accumulation, logging and checkpoints stay the engine's.
The core (bae.advantages, bae.objective, bae.blocks, bae.tasks) never imports an engine, and this
package imports no engine on its own: import the submodule you need.
"""
