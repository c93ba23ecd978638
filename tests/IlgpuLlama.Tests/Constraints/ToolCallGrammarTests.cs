using System.Text;
using IlgpuLlama.Constraints;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Constraints;

/// <summary>
/// The tool-call grammar (issue 22 item 5): several functions, each call's parameters following the
/// named function's own schema (a tagged union: the name picks the schema); and a reply under
/// <c>tool_choice: auto</c> that is text, or a call constrained from its first <c>{</c> on.
/// </summary>
public sealed class ToolCallGrammarTests
{
    static readonly ChatTool Weather = ChatTool.Function("get_weather", null,
        """{"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"], "additionalProperties": false}""");

    static readonly ChatTool Move = ChatTool.Function("move", null,
        """{"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"], "additionalProperties": false}""");

    static readonly ChatTool Anything = ChatTool.Function("log", null, """{"type": "object", "properties": {"line": {"type": "string", "pattern": "^a"}}}""");

    static bool Accepts(JsonGrammar grammar, string text)
    {
        var a = new JsonAutomaton(grammar);
        foreach (byte b in Encoding.UTF8.GetBytes(text))
            if (!a.Step(b))
                return false;
        return a.IsComplete;
    }

    [Theory]
    [InlineData("""{"name":"get_weather","parameters":{"city":"Oslo"}}""", true)]
    [InlineData("""{"name":"get_weather","parameters":{"city":"Oslo","days":3}}""", true)]
    [InlineData("""{"name":"move","parameters":{"x":1,"y":-2}}""", true)]
    [InlineData("""{"name":"log","parameters":{"line":"b","extra":[1,{"k":null}]}}""", true)] // pattern is outside the subset: any object
    [InlineData("""{"name":"get_weather","parameters":{"x":1,"y":2}}""", false)] // move's parameters under get_weather's name
    [InlineData("""{"name":"move","parameters":{"city":"Oslo"}}""", false)]
    [InlineData("""{"name":"get_weather","parameters":{}}""", false)] // city is required
    [InlineData("""{"name":"move","parameters":{"x":1.5,"y":2}}""", false)]
    [InlineData("""{"name":"other","parameters":{}}""", false)]
    [InlineData("""{"name":"move","parameters":{"x":1,"y":2}""", false)] // not closed
    [InlineData("""{"name":"move","arguments":{"x":1,"y":2}}""", false)]
    public void Each_call_follows_the_schema_of_the_function_it_names(string call, bool valid)
    {
        var grammar = JsonGrammar.ForToolCall([Weather, Move, Anything]);
        Assert.Equal(valid, Accepts(grammar, call));
        if (valid)
            Assert.NotNull(ToolCallFormat.Parse(call, [Weather, Move, Anything]));
    }

    /// <summary>A repeated name keeps its first definition, however many repeats come before it (the prefix trie holds one prefix per name, so the costs are that schema's).</summary>
    [Fact]
    public void A_repeated_function_name_keeps_its_first_schema_and_its_cost()
    {
        var longArgs = ChatTool.Function("a", null, """{"type": "object", "properties": {"first": {"type": "string"}, "second": {"type": "string"}}, "required": ["first", "second"], "additionalProperties": false}""");
        var loose = ChatTool.Function("a", null, null);
        var grammar = JsonGrammar.ForToolCall([Move, Move, longArgs, loose]);
        Assert.Equal("""{"name":"move","parameters":{"x":0,"y":0}}""".Length, grammar.MinBytes);
        // Once the name is "a", what is left is the first definition's shortest parameters and the brace.
        var automaton = new JsonAutomaton(grammar);
        foreach (byte b in Encoding.UTF8.GetBytes("""{"name":"a","parameters":"""))
            Assert.True(automaton.Step(b));
        Assert.Equal("""{"first":"","second":""}}""".Length, automaton.MinBytesToComplete);
        Assert.True(Accepts(grammar, """{"name":"a","parameters":{"first":"x","second":"y"}}"""));
        Assert.False(Accepts(grammar, """{"name":"a","parameters":{}}"""));
        Assert.True(Accepts(grammar, """{"name":"move","parameters":{"x":1,"y":2}}"""));
    }

    /// <summary>White space before a call is JSON's, for the constraint and the parser alike: a reply that begins with a vertical tab is text, not a call.</summary>
    [Fact]
    public void Only_json_white_space_may_precede_a_call()
    {
        const string call = """{"name":"move","parameters":{"x":1,"y":2}}""";
        Assert.NotNull(ToolCallFormat.Parse(" \n\t\r" + call + "\n", [Move]));
        Assert.Null(ToolCallFormat.Parse("\v" + call, [Move]));
        Assert.Null(ToolCallFormat.Parse("\u00A0" + call, [Move]));
        Assert.True(ToolCallFormat.MayBeCall(" \n"));
        Assert.True(ToolCallFormat.MayBeCall("\n{"));
        Assert.False(ToolCallFormat.MayBeCall("\v{"));
    }

    [Fact]
    public void The_shortest_call_is_the_shortest_name_with_its_smallest_parameters()
    {
        var grammar = JsonGrammar.ForToolCall([Weather, Move]);
        // {"name":"move","parameters":{"x":0,"y":0}} is 41 bytes; get_weather's shortest is {"city":""}: 48.
        Assert.Equal("""{"name":"move","parameters":{"x":0,"y":0}}""".Length, grammar.MinBytes);
        Assert.True(Accepts(grammar, """{"name":"move","parameters":{"x":0,"y":0}}"""));
        Assert.Equal(0, JsonGrammar.ForToolCallOrText([Weather, Move]).MinBytes);
    }

    const int End = 1000;

    // Every byte is a token (its id is the byte), and a few longer ones.
    static readonly string[] Longer = ["Hi", " {", "{x", "  ", "{\"name\":\"move\"", "{\"name\":\"get_weather\",\"parameters\":{"];

    static (TokenTrie Trie, Func<string, int> Id) Vocabulary()
    {
        var bytes = new List<byte[]?>();
        for (int b = 0; b < 256; b++)
            bytes.Add([(byte)b]);
        foreach (var s in Longer)
            bytes.Add(Encoding.UTF8.GetBytes(s));
        return (new TokenTrie(bytes), s => s.Length == 1 ? s[0] : 256 + Array.IndexOf(Longer, s));
    }

    static bool Allowed(JsonConstraint c, int id, int remaining = 200)
    {
        var bits = c.ComputeAllowed(remaining);
        return id < 64 * bits.Length && (bits[id >> 6] & (1UL << id)) != 0 || (id == End && c.IsComplete);
    }

    [Fact]
    public void Under_auto_a_reply_is_text_or_a_call_that_is_constrained_from_its_brace()
    {
        var (trie, id) = Vocabulary();
        var grammar = JsonGrammar.ForToolCallOrText([Weather, Move]);

        // Undecided: text, white space, special-free starts of a call; never a brace that begins no call.
        var c = new JsonConstraint(grammar, trie, [End]);
        Assert.True(Allowed(c, id("H")));
        Assert.True(Allowed(c, id("Hi")));
        Assert.True(Allowed(c, id(" ")));
        Assert.True(Allowed(c, id("  ")));
        Assert.True(Allowed(c, id("{")));
        Assert.True(Allowed(c, id(" {")));
        Assert.True(Allowed(c, id("{\"name\":\"move\"")));
        Assert.False(Allowed(c, id("{x")));
        Assert.True(c.IsComplete); // an empty reply may end
        Assert.False(c.IsText);

        // White space keeps it undecided; a brace (after white space, in one token) commits it to a call.
        c.Accept(id("  "));
        Assert.False(c.IsText);
        c.Accept(id(" {"));
        Assert.False(c.IsComplete);
        Assert.False(Allowed(c, id("H")));
        Assert.False(Allowed(c, End));
        Assert.True(Allowed(c, id("\"")));
        foreach (char ch in "\"name\":\"move\",\"parameters\":{\"x\":4,\"y\":5}}")
        {
            Assert.True(Allowed(c, id(ch.ToString())), $"'{ch}' should continue the call");
            c.Accept(id(ch.ToString()));
        }
        Assert.True(c.IsComplete);
        Assert.True(Allowed(c, End));
        Assert.False(Allowed(c, id(" ")));

        // Any other first character: text to the end, nothing masked (a brace included).
        var text = new JsonConstraint(grammar, trie, [End]);
        text.Accept(id("Hi"));
        Assert.True(text.IsText);
        Assert.True(Allowed(text, id("{x")));
        Assert.True(Allowed(text, id("{")));
        Assert.True(Allowed(text, End));
        Assert.Equal(trie.VocabSize, JsonConstraint.Count(text.ComputeAllowed(1)));
    }

    [Fact]
    public void A_call_is_not_begun_when_it_could_not_be_finished_in_the_tokens_left_but_text_still_can()
    {
        var (trie, id) = Vocabulary();
        var c = new JsonConstraint(JsonGrammar.ForToolCallOrText([Move]), trie, [End]);
        int shortest = """{"name":"move","parameters":{"x":0,"y":0}}""".Length;
        Assert.False(Allowed(c, id("{"), remaining: shortest - 1));
        Assert.True(Allowed(c, id("H"), remaining: shortest - 1));
        Assert.True(Allowed(c, id("{"), remaining: shortest));
        // The long token brings the call closer: it fits with fewer tokens left.
        Assert.True(Allowed(c, id("{\"name\":\"move\""), remaining: shortest - 13));
    }
}
