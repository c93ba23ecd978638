using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Prompt-token log-probabilities (issue 22 item 1, completions <c>echo</c> with <c>logprobs</c>):
/// <see cref="GenerationSettings.PromptLogprobs"/> against the float64 log-softmax of the engine's own
/// per-position logits (<see cref="LlamaModel.PrefillLogits"/>) and of the golden reference's float64
/// logits; the generated tokens and their logprobs unchanged; prefix reuse skipped for such a request.
/// </summary>
[Collection(SchedulerCollection.Name)]
public sealed class PromptLogprobsTests(SchedulerModelContext ctx, ITestOutputHelper output)
{
    static GenerationSettings Settings(int? promptLogprobs) => new()
    {
        MaxNewTokens = 2,
        Sampling = SamplingOptions.Greedy,
        IgnoreEos = true,
        Logprobs = 2,
        PromptLogprobs = promptLogprobs,
    };

    static (RequestResult Result, List<GeneratedToken> Stream, SchedulerStats Stats) Run(Scheduler s, IReadOnlyList<int> prompt, GenerationSettings settings)
    {
        var h = s.Submit(new GenerationRequest { PromptTokens = prompt, Settings = settings });
        for (int i = 0; s.Step(); i++)
            Assert.True(i < 10_000, "the scheduler did not finish");
        Assert.True(h.Completion.IsCompletedSuccessfully, $"{h.Completion.Status}");
        var stream = new List<GeneratedToken>();
        while (h.Tokens.TryRead(out var t))
            stream.Add(t);
        return (h.Completion.Result, stream, s.Stats);
    }

    [Fact]
    public void Prompt_logprobs_are_the_float64_log_softmax_of_the_engines_own_per_position_logits_and_track_the_golden_reference()
    {
        var c = GoldenFixture.Cases[0];
        int[] prompt = c.Prompt;
        using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefixReuse = false });
        var (with, stream, _) = Run(s, prompt, Settings(3));
        var (without, plainStream, _) = Run(s, prompt, Settings(null));

        // The generated tokens and their logprobs do not change.
        Assert.Equal(without.GeneratedTokens, with.GeneratedTokens);
        Assert.Equal(without.Logprobs!.Select(l => (l.Id, l.Logprob)), with.Logprobs!.Select(l => (l.Id, l.Logprob)));
        Assert.Null(without.PromptLogprobs);
        Assert.Null(plainStream[0].PromptLogprobs);

        // The stream's first token carries them, the result too; entry 0 is null.
        var lp = with.PromptLogprobs!;
        Assert.Same(lp, stream[0].PromptLogprobs);
        Assert.All(stream.Skip(1), t => Assert.Null(t.PromptLogprobs));
        Assert.Equal(prompt.Length, lp.Count);
        Assert.Null(lp[0]);

        var rows = new float[prompt.Length][];
        ctx.Model.PrefillLogits([new SequenceInput(0, 0, prompt)], (_, pos, row) => rows[pos] = row.ToArray());
        double worstOwn = 0, worstGolden = 0;
        for (int i = 1; i < prompt.Length; i++)
        {
            var e = lp[i]!;
            Assert.Equal(prompt[i], e.Id);
            Assert.Equal(3, e.Top.Count);
            var own = Float64Oracle.LogSoftmax(rows[i - 1]);
            var golden = Float64Oracle.LogSoftmax(c.Row(i - 1));
            var order = Enumerable.Range(0, own.Length).OrderByDescending(j => rows[i - 1][j]).ThenBy(j => j).Take(3).ToArray();
            Assert.Equal(order, e.Top.Select(t => t.Id));
            foreach (var (id, l) in e.Top.Append((e.Id, e.Logprob)))
            {
                worstOwn = Math.Max(worstOwn, Math.Abs(l - own[id]));
                worstGolden = Math.Max(worstGolden, Math.Abs(l - golden[id]));
            }
        }
        output.WriteLine($"{prompt.Length} prompt tokens: max |logprob - own| {worstOwn:G3}, - golden {worstGolden:G3} (logit tolerance {GoldenModelTests.LogitTolerance})");
        Assert.True(worstOwn < 1e-12, $"prompt logprobs differ from the float64 log-softmax of the engine's logits by {worstOwn}");
        Assert.True(worstGolden < 2 * GoldenModelTests.LogitTolerance, $"prompt logprobs differ from the golden reference by {worstGolden}");
    }

    [Fact]
    public void A_prompt_prefilled_over_several_steps_beside_another_gets_every_prompt_logprob()
    {
        var c = GoldenFixture.Cases[2];
        int[] prompt = c.Prompt[..23];
        using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefixReuse = false, PrefillTokensPerStep = 5 });
        var other = s.Submit(new GenerationRequest { PromptTokens = GoldenFixture.Cases[2].Prompt[..7], Settings = Settings(null) });
        var (r, _, _) = Run(s, prompt, Settings(0));
        Assert.True(other.Completion.IsCompletedSuccessfully);
        var lp = r.PromptLogprobs!;
        Assert.Null(lp[0]);
        double worst = 0;
        for (int i = 1; i < prompt.Length; i++)
        {
            Assert.Empty(lp[i]!.Top);
            worst = Math.Max(worst, Math.Abs(lp[i]!.Logprob - Float64Oracle.LogSoftmax(c.Row(i - 1))[prompt[i]]));
        }
        output.WriteLine($"{prompt.Length} prompt tokens in chunks of 5: max |logprob - golden| {worst:G3}");
        Assert.True(worst < 2 * GoldenModelTests.LogitTolerance, $"prompt logprobs differ from the golden reference by {worst}");
    }

    [Fact]
    public void With_prefix_reuse_on_a_request_for_prompt_logprobs_prefills_its_whole_prompt_and_gets_the_same_results()
    {
        var c = GoldenFixture.Cases[2];
        int[] first = c.Prompt[..8], prompt = c.Prompt[..20];
        RequestResult Second(bool reuse, out SchedulerStats stats)
        {
            using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefixReuse = reuse });
            Run(s, first, Settings(null));
            var (r, _, st) = Run(s, prompt, Settings(4));
            stats = st;
            return r;
        }
        var off = Second(false, out _);
        var on = Second(true, out var onStats);
        Assert.Equal(0, on.ReusedPromptTokens);
        Assert.Equal(0, onStats.PrefixReuseHits);
        Assert.Equal(first.Length + prompt.Length, onStats.PrefillTokens);
        Assert.Equal(off.GeneratedTokens, on.GeneratedTokens);
        Assert.Equal(off.PromptLogprobs!.Select(l => l?.Logprob), on.PromptLogprobs!.Select(l => l?.Logprob));
    }

    [Fact]
    public void Prompt_logprobs_outside_0_to_20_are_refused()
    {
        using var s = new Scheduler(ctx.Model);
        var e = Assert.Throws<EngineArgumentException>(() => s.Submit(new GenerationRequest { PromptTokens = [1, 2], Settings = Settings(21) }));
        Assert.Contains("prompt logprobs 21", e.Message);
        Assert.Throws<EngineArgumentException>(() => s.Submit(new GenerationRequest { PromptTokens = [1, 2], Settings = Settings(-1) }));
    }
}
