from search.tree import Node, Tree


def test_round_trip_keeps_shape_fields_and_parents():
    tree = Tree()
    step = tree.root.add_child(token_ids=[5, 6], text="Step 1.", visits=3, value_sum=1.5)
    leaf = step.add_child(token_ids=[7], text=" 42", score=0.9, terminal=True, answer="42")
    tree.root.add_child(token_ids=[8], text="x")
    assert leaf.path_ids() == [5, 6, 7]
    assert step.value == 0.5 and tree.root.value == 0.0

    data = tree.to_dict()
    again = Tree.from_dict(data)
    assert again.to_dict() == data
    copied_leaf = again.root.children[0].children[0]
    assert copied_leaf.parent.parent is again.root
    assert (copied_leaf.answer, copied_leaf.score, copied_leaf.terminal) == ("42", 0.9, True)
    assert copied_leaf.path_ids() == [5, 6, 7]
    assert [node.text for node in again.nodes()] == ["", "Step 1.", " 42", "x"]
    assert [node.text for node in again.leaves()] == [" 42", "x"]


def test_compact_form_leaves_defaults_out():
    assert Tree().to_dict() == {"root": {}}
    assert Node(token_ids=[1], text="a").to_dict() == {"ids": [1], "text": "a"}


def test_step_fields_and_the_iteration_count_round_trip():
    tree = Tree(iterations=5)
    step = tree.root.add_child(token_ids=[5, 6], text="a\n\n", logprobs=[-0.5, 0.0], prior=0.25,
                               visits=2, value_sum=1.25, score=0.5)
    leaf = step.add_child(token_ids=[7], text="5", logprobs=[-0.1], prior=1.0, terminal=True, answer="5")
    assert (leaf.depth, leaf.address(), tree.root.address()) == (2, "0.0", "")
    assert (leaf.path_text(), leaf.path_logprobs()) == ("a\n\n5", [-0.5, 0.0, -0.1])

    data = tree.to_dict()
    assert data["iterations"] == 5
    assert data["root"]["children"][0]["prior"] == 0.25
    again = Tree.from_dict(data)
    assert again.to_dict() == data and again.iterations == 5
    copied = again.root.children[0].children[0]
    assert (copied.logprobs, copied.prior, copied.path_ids()) == ([-0.1], 1.0, [5, 6, 7])


def test_recorded_self_certainty_round_trips_and_a_path_without_a_record_has_none():
    tree = Tree()
    step = tree.root.add_child(token_ids=[5, 6, 7], text="a\n\n", self_certainty=[3.0, 4.0])  # 7 appended
    leaf = step.add_child(token_ids=[8], text="5", self_certainty=[5.0])
    assert leaf.path_self_certainty() == [3.0, 4.0, 5.0]
    again = Tree.from_dict(tree.to_dict())
    assert again.root.children[0].children[0].path_self_certainty() == [3.0, 4.0, 5.0]
    assert step.add_child(token_ids=[9], text="6").path_self_certainty() is None
    assert Node(token_ids=[1], text="a").to_dict() == {"ids": [1], "text": "a"}
