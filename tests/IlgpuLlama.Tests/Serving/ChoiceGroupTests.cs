using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// n choices of one prompt (issue 22 item 2, <see cref="Scheduler.SubmitGroup"/>): one prefill, the
/// prompt's keys and values copied to the other choices' slots, each choice sampling from its own
/// stream: the same tokens as n lone requests with those streams, with fewer slots than choices and
/// with a choice cancelled.
/// </summary>
[Collection(SchedulerCollection.Name)]
public sealed class ChoiceGroupTests(SchedulerModelContext ctx, ITestOutputHelper output)
{
    static int[] Prompt => GoldenFixture.Cases[2].Prompt[..12];

    static GenerationSettings Sampled(int maxNew = 6, int? logprobs = null) => new()
    {
        MaxNewTokens = maxNew,
        Sampling = new SamplingOptions { Temperature = 1.3f, TopK = 0, TopP = 1f, Seed = 7 },
        IgnoreEos = true,
        Logprobs = logprobs,
    };

    static GenerationSettings Greedy(int maxNew = 6) => new() { MaxNewTokens = maxNew, Sampling = SamplingOptions.Greedy, IgnoreEos = true };

    static void RunAll(Scheduler s)
    {
        for (int i = 0; s.Step(); i++)
            Assert.True(i < 10_000, "the scheduler did not finish");
    }

    static RequestResult Done(ScheduledRequest r)
    {
        Assert.True(r.Completion.IsCompletedSuccessfully, $"choice {r.Choice}: {r.Completion.Status}");
        return r.Completion.Result;
    }

    /// <summary>Each choice's settings submitted alone, one after another, to a scheduler without prefix reuse.</summary>
    List<RequestResult> Alone(GenerationSettings settings, int n)
    {
        using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefixReuse = false });
        var results = new List<RequestResult>();
        for (int i = 0; i < n; i++)
        {
            var h = s.Submit(new GenerationRequest { PromptTokens = Prompt, Settings = settings with { SamplingStream = settings.SamplingStream + i } });
            RunAll(s);
            results.Add(Done(h));
        }
        return results;
    }

    /// <summary>Other tokens at positions 0.. of every slot, so a copy that did not happen cannot pass for one.</summary>
    void Scribble()
    {
        var other = GoldenFixture.Cases[2].Prompt[20..40];
        ctx.Model.Prefill(Enumerable.Range(0, ctx.Model.MaxBatch).Select(slot => new SequenceInput(slot, 0, other)).ToArray(), SelectMode.ArgMax);
    }

    [Fact]
    public void Greedy_choices_prefill_the_prompt_once_and_all_give_the_lone_output()
    {
        Scribble();
        using var s = new Scheduler(ctx.Model);
        var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy() }, 3);
        RunAll(s);
        Assert.Equal([0, 1, 2], choices.Select(c => c.Choice));
        var alone = ctx.Alone(Prompt, 6);
        foreach (var c in choices)
            Assert.Equal(alone, Done(c).GeneratedTokens);
        Assert.Equal(Prompt.Length, s.Stats.PrefillTokens);
        Assert.Equal(2 * Prompt.Length, s.Stats.SharedPromptTokens);
    }

    [Fact]
    public void Choices_with_a_repetition_penalty_get_the_prompts_penalty_flags_with_its_keys_and_values()
    {
        var settings = Greedy(maxNew: 8) with { Sampling = SamplingOptions.Greedy with { RepetitionPenalty = 1.5f } };
        var alone = Alone(settings, 1)[0];
        Scribble();
        using var s = new Scheduler(ctx.Model);
        var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = settings }, 2);
        RunAll(s);
        Assert.All(choices, c => Assert.Equal(alone.GeneratedTokens, Done(c).GeneratedTokens));
        Assert.Equal(Prompt.Length, s.Stats.SharedPromptTokens);
    }

    [Fact]
    public void Sampled_choices_give_the_tokens_and_logprobs_of_lone_requests_with_their_streams()
    {
        var settings = Sampled(logprobs: 2);
        var alone = Alone(settings, 3);
        using var s = new Scheduler(ctx.Model);
        var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = settings }, 3);
        RunAll(s);
        for (int i = 0; i < 3; i++)
        {
            var r = Done(choices[i]);
            Assert.Equal(alone[i].GeneratedTokens, r.GeneratedTokens);
            Assert.Equal(alone[i].Logprobs!.Select(l => l.Logprob), r.Logprobs!.Select(l => l.Logprob));
        }
        Assert.NotEqual(alone[0].GeneratedTokens, alone[1].GeneratedTokens); // the streams differ
        Assert.Equal(Prompt.Length, s.Stats.PrefillTokens);
    }

    [Fact]
    public void Six_choices_through_four_slots_are_queued_and_still_give_the_lone_tokens()
    {
        var settings = Sampled(maxNew: 4);
        var alone = Alone(settings, 6);
        using var s = new Scheduler(ctx.Model);
        var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = settings }, 6);
        s.Step();
        Assert.Equal(4, s.SlotsInUse);
        Assert.Equal(2, s.QueuedCount);
        RunAll(s);
        for (int i = 0; i < 6; i++)
            Assert.Equal(alone[i].GeneratedTokens, Done(choices[i]).GeneratedTokens);
        var st = s.Stats;
        output.WriteLine($"prefilled {st.PrefillTokens}, copied {st.SharedPromptTokens}, reused {st.ReusedPromptTokens} of 6 x {Prompt.Length} prompt tokens");
        Assert.True(st.PrefillTokens < 2 * Prompt.Length, $"prefilled {st.PrefillTokens}");
    }

    [Fact]
    public void A_cancelled_choice_ends_alone_and_a_cancelled_prefiller_hands_the_prompt_to_the_next_choice()
    {
        var alone = ctx.Alone(Prompt, 6);
        using (var s = new Scheduler(ctx.Model))
        {
            var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy() }, 3);
            s.Step();
            choices[1].Cancel();
            RunAll(s);
            Assert.True(choices[1].Completion.IsCanceled);
            Assert.Equal(alone, Done(choices[0]).GeneratedTokens);
            Assert.Equal(alone, Done(choices[2]).GeneratedTokens);
        }
        using (var s = new Scheduler(ctx.Model, options: new SchedulerOptions { PrefillTokensPerStep = 5 }))
        {
            var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy() }, 3);
            s.Step(); // choice 0 has prefilled 5 of 12 prompt tokens; the others hold slots
            Assert.Equal(3, s.SlotsInUse + s.QueuedCount);
            choices[0].Cancel();
            RunAll(s);
            Assert.True(choices[0].Completion.IsCanceled);
            Assert.Equal(alone, Done(choices[1]).GeneratedTokens);
            Assert.Equal(alone, Done(choices[2]).GeneratedTokens);
            Assert.Equal(Prompt.Length, s.Stats.SharedPromptTokens);
        }
    }

    [Fact]
    public void Choices_share_the_prompt_logprobs_and_a_one_token_prefiller_still_shares_its_prompt()
    {
        using var s = new Scheduler(ctx.Model);
        var choices = s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy(maxNew: 1) with { PromptLogprobs = 1 } }, 2);
        RunAll(s);
        var a = Done(choices[0]);
        var b = Done(choices[1]);
        Assert.Equal(a.GeneratedTokens, b.GeneratedTokens);
        Assert.Equal(a.PromptLogprobs!.Select(l => l?.Logprob), b.PromptLogprobs!.Select(l => l?.Logprob));
        Assert.Equal(Prompt.Length, s.Stats.PrefillTokens);
    }

    [Fact]
    public async Task The_facade_submits_choices_that_its_background_loop_serves()
    {
        using var engine = LlamaEngine.FromModel(ctx.Model, null);
        var choices = engine.SubmitChoices(Prompt, 2, Greedy(maxNew: 3));
        var results = await Task.WhenAll(choices.Select(c => c.Completion)).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.All(results, r => Assert.Equal(ctx.Alone(Prompt, 3), r.GeneratedTokens));
        Assert.Equal([0, 1], choices.Select(c => c.Choice));
    }

    [Fact]
    public void A_group_with_a_slot_or_n_below_1_is_refused()
    {
        using var s = new Scheduler(ctx.Model);
        Assert.Throws<EngineArgumentException>(() => s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy() }, 0));
        Assert.Throws<EngineArgumentException>(() => s.SubmitGroup(new GenerationRequest { PromptTokens = Prompt, Settings = Greedy(), Slot = 1 }, 2));
    }

    [Fact]
    public void A_group_that_does_not_fit_the_queue_is_refused_whole()
    {
        // No waiting room: four choices fit the four free slots (one prefills, three hold a slot); five do not.
        using var s = new Scheduler(ctx.Model, options: new SchedulerOptions { MaxQueuedRequests = 0 });
        var request = new GenerationRequest { PromptTokens = Prompt, Settings = Greedy(maxNew: 1) };
        Assert.Throws<QueueFullException>(() => s.SubmitGroup(request, 5));
        Assert.Equal(0, s.QueuedCount);
        var choices = s.SubmitGroup(request, 4);
        RunAll(s);
        Assert.All(choices, c => Assert.Equal(ctx.Alone(Prompt, 1), Done(c).GeneratedTokens));
    }
}
