"""Meta-reinforcement learning (notebook 07): batched environments, bandit baselines, RL².

* `envs`: `BernoulliBandit`, `DependentBandit`, `GridNavi` (pure PyTorch, batched, torch.Generator);
* `baselines`: random, greedy, eps-greedy, UCB1, Thompson; exact Bayes-optimal value by DP;
* `searcher`: a scripted GridNavi searcher with task / episode / never memory rules (Problem 2);
* `rl2`: the GRU policy, rollouts with an explicit hidden-state reset rule, A2C with GAE;
* `policy_io`: save / load trained policies with their environment.
"""
from .envs import BernoulliBandit, DependentBandit, GridNavi
from .baselines import BANDIT_POLICIES, bayes_optimal_value, run_bandit_policy
from .rl2 import RESET_RULES, RL2Config, RL2Policy, evaluate_rl2, rollout, should_reset, train_rl2
from .policy_io import load_policy, save_policy

__all__ = ["BernoulliBandit", "DependentBandit", "GridNavi", "BANDIT_POLICIES", "bayes_optimal_value",
           "run_bandit_policy", "RESET_RULES", "RL2Config", "RL2Policy", "evaluate_rl2", "rollout",
           "should_reset", "train_rl2", "load_policy", "save_policy"]
