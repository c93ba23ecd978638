using System.Text;
using System.Text.Json;
using IlgpuLlama.Constraints;
using IlgpuLlama.Tests.Text;
using IlgpuLlama.Text;
using Json.Schema;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Constraints;

/// <summary>Parses a generated text and validates it with JsonSchema.Net (the independent oracle).</summary>
internal static class JsonOracle
{
    /// <summary>Fails unless <paramref name="text"/> is one JSON text, without repeated keys, valid against <paramref name="schema"/> (null: any object).</summary>
    public static void AssertValid(string? schema, string text)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            Assert.Fail($"does not parse ({e.Message}): {text}");
            return;
        }
        using (document)
        {
            AssertNoRepeatedKeys(document.RootElement, text);
            if (schema is null)
            {
                Assert.True(document.RootElement.ValueKind == JsonValueKind.Object, $"not an object: {text}");
                return;
            }
            var results = JsonSchema.FromText(schema).Evaluate(document.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
            Assert.True(results.IsValid, $"does not validate: {text}");
        }
    }

    static void AssertNoRepeatedKeys(JsonElement e, string text)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            var names = new HashSet<string>();
            foreach (var p in e.EnumerateObject())
            {
                Assert.True(names.Add(p.Name), $"repeated key \"{p.Name}\": {text}");
                AssertNoRepeatedKeys(p.Value, text);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
            foreach (var item in e.EnumerateArray())
                AssertNoRepeatedKeys(item, text);
    }
}

/// <summary>The vocabulary mask: the trie walk against a brute force, and the termination rule on random walks.</summary>
public sealed class TokenMaskTests(ITestOutputHelper output)
{
    /// <summary>The ten schemas of the acceptance test (every supported keyword, nesting, enum, const, integer and number, null, booleans).</summary>
    public static readonly string[] Schemas =
    [
        """{"type":"object","title":"person","properties":{"name":{"type":"string"},"age":{"type":"integer"},"height":{"type":"number"},"role":{"enum":["admin","user",3,null]},"tags":{"type":"array","items":{"type":"string"}},"ok":{"type":"boolean"},"none":{"type":"null"},"kind":{"const":"person"}},"required":["name","kind"],"additionalProperties":false}""",
        """{"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer"},"email":{"type":"string"}},"required":["id"],"additionalProperties":false},"scores":{"type":"array","items":{"type":"number"}}},"required":["user","scores"]}""",
        """{"type":"array","items":{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"required":["x","y"],"additionalProperties":false}}""",
        """{"type":"string","enum":["red","green","blue"],"description":"a colour"}""",
        """{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"type":["boolean","null"]}},"required":["a","b","c"],"additionalProperties":false}""",
        """{"type":"object","additionalProperties":{"type":"integer"}}""",
        """{"type":"array","items":{"type":"array","items":{"type":"integer"}}}""",
        """{"type":"object","properties":{"version":{"const":2},"kind":{"const":"event"},"payload":{"type":"object"}},"required":["version","kind","payload"],"additionalProperties":false}""",
        """{"type":["number","string"]}""",
        """{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object","properties":{"c":{"type":"array","items":{"enum":[1,2,3]}}},"required":["c"]}},"required":["b"]},"note":{"type":"string"},"n":{"type":"integer"}},"required":["a"],"additionalProperties":false}""",
    ];

    const int End = 100000; // an end token id past every test vocabulary

    static TokenTrie TinyTrie(out IReadOnlyList<byte[]?> bytes)
    {
        var tok = TestTokenizers.Tiny;
        var list = new byte[]?[tok.VocabSize];
        for (int id = 0; id < list.Length; id++)
            if (tok.HasId(id) && !tok.IsSpecial(id))
                list[id] = tok.TokenBytes(id);
        bytes = list;
        return TokenTrie.For(tok);
    }

    /// <summary>The allowed set by definition: feed the text so far and each token's bytes to a fresh automaton.</summary>
    static HashSet<int> BruteForce(JsonGrammar grammar, List<byte> prefix, IReadOnlyList<byte[]?> vocabulary, int remaining, IEnumerable<int> ends)
    {
        var allowed = new HashSet<int>();
        var start = new JsonAutomaton(grammar);
        foreach (byte b in prefix)
            Assert.True(start.Step(b));
        if (start.IsComplete)
            allowed.UnionWith(ends.Where(e => e < vocabulary.Count));
        for (int id = 0; id < vocabulary.Count; id++)
        {
            if (vocabulary[id] is not { } token)
                continue;
            var a = new JsonAutomaton(grammar);
            bool ok = prefix.All(a.Step) && token.All(a.Step);
            if (ok && a.MinBytesToComplete <= remaining - 1)
                allowed.Add(id);
        }
        return allowed;
    }

    static HashSet<int> Set(ReadOnlySpan<ulong> bits)
    {
        var set = new HashSet<int>();
        for (int w = 0; w < bits.Length; w++)
            for (int b = 0; b < 64; b++)
                if ((bits[w] & (1UL << b)) != 0)
                    set.Add(w * 64 + b);
        return set;
    }

    [Fact]
    public void Trie_mask_equals_the_brute_force_mask_along_random_walks()
    {
        var trie = TinyTrie(out var bytes);
        int eos = TestTokenizers.Tiny.EotId;
        var random = new Random(7);
        int checkedStates = 0;
        foreach (var schema in Schemas.Append(null))
        {
            var grammar = schema is null ? JsonGrammar.AnyObject : JsonGrammar.FromSchema(schema);
            for (int walk = 0; walk < 2; walk++)
            {
                int budget = grammar.MinBytes + random.Next(0, 40);
                var constraint = new JsonConstraint(grammar, trie, [eos]);
                var prefix = new List<byte>();
                for (int step = 0; step < budget && !constraint.Ended; step++)
                {
                    var mask = Set(constraint.ComputeAllowed(budget - step));
                    var expected = BruteForce(grammar, prefix, bytes, budget - step, [eos]);
                    Assert.Equal(expected.Order(), mask.Order());
                    checkedStates++;
                    int token = mask.ElementAt(random.Next(mask.Count));
                    constraint.Accept(token);
                    if (token != eos)
                        prefix.AddRange(bytes[token]!);
                }
                Assert.True(constraint.IsComplete);
            }
        }
        output.WriteLine($"{checkedStates} states compared");
    }

    [Fact]
    public void Trie_mask_equals_the_brute_force_mask_on_the_cl100k_vocabulary()
    {
        var tok = TestTokenizers.Cl100kAsLlama3;
        var trie = TokenTrie.For(tok);
        Assert.True(trie.EveryByteIsAToken);
        var bytes = Enumerable.Range(0, tok.VocabSize).Select(id => tok.HasId(id) && !tok.IsSpecial(id) ? tok.TokenBytes(id) : null).ToArray();
        var random = new Random(3);
        foreach (var grammar in new[] { JsonGrammar.AnyObject, JsonGrammar.FromSchema(Schemas[0]) })
        {
            int budget = grammar.MinBytes + 12;
            var constraint = new JsonConstraint(grammar, trie, [tok.EotId]);
            var prefix = new List<byte>();
            for (int step = 0; step < budget && !constraint.Ended; step++)
            {
                var mask = Set(constraint.ComputeAllowed(budget - step));
                if (step % 3 == 0)
                    Assert.Equal(BruteForce(grammar, prefix, bytes, budget - step, [tok.EotId]).Order(), mask.Order());
                int token = mask.ElementAt(random.Next(mask.Count));
                constraint.Accept(token);
                if (token != tok.EotId)
                    prefix.AddRange(bytes[token]!);
            }
            Assert.True(constraint.IsComplete);
        }
    }

    [Fact]
    public void Random_tokens_within_the_budget_always_give_valid_json()
    {
        // A model with uniform random choices is the hardest case for the termination rule.
        var trie = TinyTrie(out var bytes);
        var random = new Random(11);
        foreach (var schema in Schemas.Append(null))
        {
            var grammar = schema is null ? JsonGrammar.AnyObject : JsonGrammar.FromSchema(schema);
            for (int walk = 0; walk < 20; walk++)
            {
                int budget = grammar.MinBytes + random.Next(0, 60);
                var constraint = new JsonConstraint(grammar, trie, [End]);
                var text = new List<byte>();
                for (int step = 0; step < budget; step++)
                {
                    var mask = Set(constraint.ComputeAllowed(budget - step));
                    // Apply leaves exactly the allowed logits (and the row past the vocabulary is refused).
                    var row = new float[trie.VocabSize + 70];
                    constraint.Apply(row, budget - step);
                    Assert.Equal(mask.Order(), Enumerable.Range(0, row.Length).Where(i => row[i] == 0));
                    bool canEnd = constraint.IsComplete;
                    Assert.True(mask.Count > 0 || canEnd);
                    int pick = random.Next(mask.Count + (canEnd ? 1 : 0));
                    if (pick == mask.Count)
                        break;
                    int token = mask.ElementAt(pick);
                    constraint.Accept(token);
                    text.AddRange(bytes[token]!);
                }
                Assert.True(constraint.IsComplete);
                JsonOracle.AssertValid(schema, Encoding.UTF8.GetString(text.ToArray()));
            }
        }
    }

    [Fact]
    public void Special_tokens_other_than_the_end_tokens_are_never_allowed()
    {
        var tok = TestTokenizers.Tiny;
        var constraint = new JsonConstraint(JsonGrammar.AnyValue, TokenTrie.For(tok), [tok.EotId]);
        var allowed = Set(constraint.ComputeAllowed(10));
        Assert.DoesNotContain(allowed, tok.IsSpecial);
        Assert.Contains(allowed, id => tok.TokenString(id) == "{");
        constraint.Accept(tok.Encode("7", addBos: false)[0]);
        allowed = Set(constraint.ComputeAllowed(9));
        Assert.Contains(tok.EotId, allowed); // "7" is complete; more digits may follow
        Assert.Equal([tok.EotId], allowed.Where(tok.IsSpecial));
    }

    [Fact]
    public void Mask_cost_per_step_over_a_llama3_sized_vocabulary()
    {
        // Llama 3's vocabulary: cl100k_base's 100,256 ranks and 28,000 more (multilingual words): those
        // are made here from pairs of cl100k tokens, for a byte-level vocabulary of 128,256 ids.
        var tok = TestTokenizers.Cl100kAsLlama3;
        var bytes = new byte[]?[Llama3Vocabulary.Llama3RankCount + Llama3Vocabulary.SpecialTokenCount];
        var seen = new HashSet<string>();
        int ranks = 0;
        for (int id = 0; id < bytes.Length; id++)
            if (tok.HasId(id) && !tok.IsSpecial(id))
            {
                bytes[id] = tok.TokenBytes(id);
                seen.Add(Convert.ToHexString(bytes[id]!));
                ranks = id + 1;
            }
        var random = new Random(5);
        for (int id = ranks; id < Llama3Vocabulary.Llama3RankCount; id++)
        {
            byte[] pair;
            do
                pair = [.. bytes[random.Next(ranks)]!, .. bytes[random.Next(ranks)]!];
            while (pair.Length > 24 || !seen.Add(Convert.ToHexString(pair)));
            bytes[id] = pair;
        }
        var trie = new TokenTrie(bytes);
        Assert.True(trie.EveryByteIsAToken);
        output.WriteLine($"trie nodes {trie.NodeCounts}");
        var cost = MaskBenchmark.Run(trie, steps: 300);
        output.WriteLine(cost.ToString());
        var anyObject = MaskBenchmark.Run(trie, JsonGrammar.AnyObject, steps: 300);
        output.WriteLine("json_object " + anyObject);
        Assert.True(cost.MeanAllowed > 1);
    }
}
