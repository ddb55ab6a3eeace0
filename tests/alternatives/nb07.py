"""Notebook 07: an explicit memo dict over state tuples, a rule table and zeros_like resets, loops for counting."""
ALTERNATIVES = {
    "q1": [{"bayes_value_two_arms": '''def bayes_value_two_arms(n: int) -> float:
    memo = {}

    def value(state):
        if sum(state) == n:
            return 0.0
        if state not in memo:
            best = float("-inf")
            for i_s, i_f in ((0, 1), (2, 3)):              # arm 1: (s1, f1), arm 2: (s2, f2)
                p = (state[i_s] + 1) / (state[i_s] + state[i_f] + 2)
                win, lose = list(state), list(state)
                win[i_s] += 1
                lose[i_f] += 1
                best = max(best, p * (1 + value(tuple(win))) + (1 - p) * value(tuple(lose)))
            memo[state] = best
        return memo[state]

    return float(value((0, 0, 0, 0)))
'''}],
    "q2": [{"play_trials": '''def play_trials(policy, env, task_batches, reset="task", generator=None, greedy=False):
    B = task_batches[0].shape[0]
    h = policy.initial_state(B)
    rewards = []
    for tasks in task_batches:
        state, obs = env.reset(tasks)
        x = policy.make_input(obs, None, torch.zeros(B), torch.zeros(B))
        for episode in range(env.n_episodes):
            resets = {"task": episode == 0, "episode": True, "never": False}
            if resets[reset]:
                h = torch.zeros_like(h)
                x = policy.make_input(obs, None, torch.zeros(B), torch.zeros(B))
            for step in range(env.episode_len):
                logits, value, h = policy(h, x)
                action = sample_action(logits, generator, greedy)
                state, obs, reward = env.step(tasks, state, action, generator)
                done = step == env.episode_len - 1
                if done:
                    state, obs = env.reset(tasks)
                flag = torch.ones(B) if done else torch.zeros(B)
                x = policy.make_input(obs, action, reward, flag)
                rewards.append(reward)
    return torch.stack(rewards, 1)
'''}],
    "q4": [{"best_first_episode_rules": "def best_first_episode_rules():\n    return frozenset(['episode', 'task'])\n"}],
    "q5": [{"count_states": "def count_states(n):\n"
                            "    return sum(1 for s1 in range(n + 1) for f1 in range(n + 1 - s1)\n"
                            "               for s2 in range(n + 1 - s1 - f1) for f2 in range(n + 1 - s1 - f1 - s2))\n"}],
}
