using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Prefix reuse (issue 22 item 4): a request takes the free KV slot whose cached tokens share the
/// longest prefix with its prompt and prefills only the rest. Each scenario runs twice on the golden
/// model, without reuse and with it, and the greedy tokens must be the same, bit for bit, while the
/// prefilled tokens drop by exactly the reused ones.
/// </summary>
[Collection(SchedulerCollection.Name)]
public sealed class PrefixReuseTests(SchedulerModelContext ctx, ITestOutputHelper output)
{
    /// <summary>One request of a scenario: its prompt built from the results so far, and what reuse it should get.</summary>
    sealed record Turn(Func<IReadOnlyList<RequestResult>, int[]> Prompt, int MaxNew, Func<IReadOnlyList<RequestResult>, int> ExpectReused)
    {
        public int? Slot { get; init; }
        public Func<IReadOnlyList<RequestResult>, int> Start { get; init; } = _ => 0;
        public float Penalty { get; init; } = 1f;
        public int? Logprobs { get; init; }
    }

    /// <summary>Runs batches of turns (each batch submitted together and run to the end) and returns every result, in order.</summary>
    static (List<RequestResult> Results, SchedulerStats Stats) Run(SchedulerModelContext ctx, bool reuse, IReadOnlyList<Turn[]> batches, int? prefillPerStep = null)
    {
        using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefixReuse = reuse, PrefillTokensPerStep = prefillPerStep });
        var results = new List<RequestResult>();
        foreach (var batch in batches)
        {
            var handles = batch.Select(t => s.Submit(new GenerationRequest
            {
                PromptTokens = t.Prompt(results),
                Slot = t.Slot,
                StartPosition = t.Start(results),
                Settings = new GenerationSettings
                {
                    MaxNewTokens = t.MaxNew,
                    Sampling = SamplingOptions.Greedy with { RepetitionPenalty = t.Penalty },
                    IgnoreEos = true,
                    Logprobs = t.Logprobs,
                },
            })).ToArray();
            for (int i = 0; s.Step(); i++)
                Assert.True(i < 10_000, "the scheduler did not finish");
            foreach (var h in handles)
            {
                Assert.True(h.Completion.IsCompletedSuccessfully, $"request {h.Id}: {h.Completion.Status}");
                results.Add(h.Completion.Result);
            }
        }
        return (results, s.Stats);
    }

    /// <summary>The scenario without and with reuse: same tokens; the reused counts as expected; prefill drops by them.</summary>
    void AssertSameWithReuse(IReadOnlyList<Turn[]> batches, int? prefillPerStep = null)
    {
        var (plain, plainStats) = Run(ctx, reuse: false, batches, prefillPerStep);
        var (reused, stats) = Run(ctx, reuse: true, batches, prefillPerStep);
        var turns = batches.SelectMany(b => b).ToArray();
        long expectedReused = 0;
        for (int i = 0; i < turns.Length; i++)
        {
            Assert.Equal(0, plain[i].ReusedPromptTokens);
            Assert.Equal(plain[i].PromptTokens, reused[i].PromptTokens);
            Assert.Equal(plain[i].GeneratedTokens, reused[i].GeneratedTokens);
            if (plain[i].Logprobs is { } expectedLogprobs)
            {
                // Not bit for bit: the reused keys and values of generated tokens were written by
                // decode steps, which round differently from a prefill of the same tokens.
                double worst = expectedLogprobs.Zip(reused[i].Logprobs!, (a, b) => Math.Abs(a.Logprob - b.Logprob)).Max();
                output.WriteLine($"request {i}: largest log-probability difference {worst:G3}");
                Assert.True(worst < 1e-3, $"request {i}: log-probabilities differ by {worst}");
            }
            int expect = turns[i].ExpectReused(plain);
            output.WriteLine($"request {i}: prompt {plain[i].PromptTokens.Count}, reused {reused[i].ReusedPromptTokens} (expected {expect})");
            Assert.Equal(expect, reused[i].ReusedPromptTokens);
            expectedReused += expect;
        }
        Assert.Equal(0, plainStats.PrefixReuseHits);
        Assert.Equal(turns.Count(t => t.ExpectReused(plain) > 0), stats.PrefixReuseHits);
        Assert.Equal(expectedReused, stats.ReusedPromptTokens);
        Assert.Equal(plainStats.PrefillTokens - expectedReused, stats.PrefillTokens);
    }

    static int[] Cat(params IEnumerable<int>[] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>Tokens a finished request left in its slot's cache: its prompt and all generated tokens but the last.</summary>
    static int[] InCache(RequestResult r) => Cat(r.PromptTokens, r.GeneratedTokens.Take(r.GeneratedTokens.Count - 1));

    static readonly int[] Nothing = [];

    [Theory]
    [InlineData(null)]
    [InlineData(5)]
    public void A_growing_conversation_prefills_only_each_turns_new_tokens(int? prefillPerStep)
    {
        var c = GoldenFixture.Cases;
        // Turn n's prompt = turn n-1's prompt + its reply + a new message; the cache holds all of it
        // but the reply's last token, which is the first one prefilled.
        AssertSameWithReuse(
        [
            [new(_ => c[0].Prompt, 8, _ => 0)],
            [new(r => Cat(r[0].PromptTokens, r[0].GeneratedTokens, [20, 21, 22]), 8, r => InCache(r[0]).Length)],
            [new(r => Cat(r[1].PromptTokens, r[1].GeneratedTokens, [30, 31]), 6, r => InCache(r[1]).Length)],
            [new(r => Cat(r[2].PromptTokens, r[2].GeneratedTokens, [40]), 6, r => InCache(r[2]).Length)],
        ], prefillPerStep);
    }

    [Fact]
    public void With_reuse_the_logits_agree_to_rounding()
    {
        var c = GoldenFixture.Cases;
        // The chosen tokens' log-probabilities are computed from the whole fp32 logits row.
        AssertSameWithReuse(
        [
            [new(_ => c[2].Prompt[..40], 8, _ => 0) { Logprobs = 3 }],
            [new(r => Cat(r[0].PromptTokens, r[0].GeneratedTokens, [20, 21, 22]), 8, r => InCache(r[0]).Length) { Logprobs = 3 }],
            [new(r => Cat(r[1].PromptTokens, r[1].GeneratedTokens, [30]), 8, r => InCache(r[1]).Length) { Logprobs = 3 }],
        ]);
    }

    [Fact]
    public void Two_interleaved_conversations_keep_their_own_slots_and_a_newcomer_takes_a_fresh_one()
    {
        var c = GoldenFixture.Cases;
        int[] newcomer = [1, 5, 200, 201, 202];
        AssertSameWithReuse(
        [
            [new(_ => c[0].Prompt, 6, _ => 0), new(_ => c[2].Prompt[..40], 7, _ => 0)],
            // Reversed order, with an unrelated prompt that shares only the first token: it must not
            // evict a conversation (it would keep 1 of their 14 and 46 cached tokens).
            [
                new(r => Cat(r[1].PromptTokens, r[1].GeneratedTokens, [7, 8]), 5, r => InCache(r[1]).Length),
                new(_ => newcomer, 4, _ => 0),
                new(r => Cat(r[0].PromptTokens, r[0].GeneratedTokens, [9]), 5, r => InCache(r[0]).Length),
            ],
            [
                new(r => Cat(r[4].PromptTokens, r[4].GeneratedTokens, [10, 11]), 5, r => InCache(r[4]).Length),
                new(r => Cat(r[2].PromptTokens, r[2].GeneratedTokens, [12]), 5, r => InCache(r[2]).Length),
                new(r => Cat(r[3].PromptTokens, r[3].GeneratedTokens, [13]), 3, r => InCache(r[3]).Length),
            ],
        ]);
    }

    [Fact]
    public void A_prompt_that_is_a_strict_prefix_of_the_cached_tokens_prefills_only_its_last_token()
    {
        var c = GoldenFixture.Cases;
        AssertSameWithReuse(
        [
            [new(_ => c[2].Prompt[..30], 10, _ => 0)],
            [new(r => InCache(r[0])[..25], 6, _ => 24)],
            // The first request's own prompt again: the slot now holds the 25-token prompt and its
            // reply, which shares those 25 tokens with it.
            [new(_ => c[2].Prompt[..30], 6, _ => 25)],
            // And once more: now all of it but the last token.
            [new(_ => c[2].Prompt[..30], 6, _ => 29)],
        ]);
    }

    [Fact]
    public void A_prompt_diverging_in_the_middle_reuses_the_common_part()
    {
        var c = GoldenFixture.Cases;
        Assert.NotEqual(50, c[2].Prompt[20]);
        AssertSameWithReuse(
        [
            [new(_ => c[2].Prompt[..30], 6, _ => 0)],
            [new(_ => Cat(c[2].Prompt[..20], [50, 51, 52, 53, 54, 55]), 8, _ => 20)],
            // The slot now holds the diverged prompt: the original one shares 20 tokens with it.
            [new(_ => c[2].Prompt[..36], 4, _ => 20)],
        ]);
    }

    [Fact]
    public void A_prompt_equal_to_the_cached_tokens_still_prefills_its_last_token()
    {
        var c = GoldenFixture.Cases;
        AssertSameWithReuse(
        [
            [new(_ => c[0].Prompt, 8, _ => 0)],
            [new(r => InCache(r[0]), 8, r => InCache(r[0]).Length - 1)],
            [new(r => InCache(r[1]), 5, r => InCache(r[1]).Length - 1)],
        ]);
    }

    [Fact]
    public void Pinned_requests_update_their_slots_cache_and_penalised_requests_prefill_from_zero()
    {
        var c = GoldenFixture.Cases;
        int[] other = [1, 300, 301, 302, 303, 304];
        AssertSameWithReuse(
        [
            // Unpinned, into slot 0 (all slots are free and unused: the first).
            [new(_ => c[0].Prompt, 6, _ => 0)],
            // Pinned to slot 0 from position 0: overwrites it.
            [new(_ => other, 6, _ => 0) { Slot = 0 }],
            // A chat-style continuation of slot 0: its last reply token and a new message.
            [new(r => Cat([r[1].GeneratedTokens[^1]], [60, 61]), 5, _ => 0) { Slot = 0, Start = r => InCache(r[1]).Length }],
            // The whole conversation as one prompt: the continuation's record covers it.
            [new(r => Cat(r[1].PromptTokens, r[1].GeneratedTokens, [60, 61], r[2].GeneratedTokens, [62]), 4,
                r => InCache(r[1]).Length + 3 + r[2].GeneratedTokens.Count - 1)],
            // A repetition penalty: flags per slot are rebuilt from the prompt, so no reuse.
            [new(r => Cat(r[3].PromptTokens, r[3].GeneratedTokens, [63]), 4, _ => 0) { Penalty = 1.3f }],
            // The first prompt again: slot 0 no longer holds it (they share one token, too little to evict).
            [new(_ => c[0].Prompt, 6, _ => 0)],
        ]);
    }

    [Fact]
    public void Without_a_qualifying_match_the_least_recently_used_slot_is_evicted()
    {
        var c = GoldenFixture.Cases;
        // Four slots: four unrelated prompts fill them (the first is the oldest); a fifth takes the
        // first's slot, so the first prompt again finds nothing, while the third still matches.
        int[][] prompts = [c[0].Prompt, [2, 310, 311, 312], [3, 320, 321], [4, 330, 331, 332, 333], [5, 340, 341]];
        AssertSameWithReuse(
        [
            [new(_ => prompts[0], 3, _ => 0)],
            [new(_ => prompts[1], 3, _ => 0)],
            [new(_ => prompts[2], 3, _ => 0)],
            [new(_ => prompts[3], 3, _ => 0)],
            [new(_ => prompts[4], 3, _ => 0)],
            [new(_ => prompts[0], 3, _ => 0)], // takes the second's slot, the least recently used now
            [new(_ => prompts[2], 3, _ => prompts[2].Length - 1)],
        ]);
    }
}
